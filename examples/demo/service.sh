#!/bin/sh
# A small long-running service: handles a "request" every few seconds, stops cleanly on TERM.
trap 'echo "service: got TERM, shutting down cleanly"; exit 0' TERM
echo "service: listening (pid $$)"
n=0
while true; do
  n=$((n + 1))
  echo "service: handled request $n"
  sleep 3 &
  wait $!
done
