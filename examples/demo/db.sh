#!/bin/sh
# A stand-in for a database: it takes a moment to start, says when it is
# ready (the line its Ready check waits for), and stops cleanly on TERM.
trap 'echo "db: shutting down"; exit 0' TERM
echo "db: replaying the journal (pid $$)"
sleep 2 &
wait $!
echo "db: ready to accept connections"
while true; do
  sleep 60 &
  wait $!
done
