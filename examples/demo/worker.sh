#!/bin/sh
# A worker of a pool: zist runs one per instance, with ZIST_INSTANCE set
# and `{instance}` in its Args replaced by its number.
trap 'echo "worker $1: done"; exit 0' TERM
n=0
while true; do
  n=$((n + 1))
  echo "worker $1 (ZIST_INSTANCE=$ZIST_INSTANCE): job $n"
  sleep 5 &
  wait $!
done
