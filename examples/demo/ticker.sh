#!/bin/sh
# A ticking logger: one line a second on stdout, a warning every tenth on stderr.
i=0
while true; do
  i=$((i + 1))
  echo "tick $i"
  [ $((i % 10)) -eq 0 ] && echo "warning: $i ticks and counting" >&2
  sleep 1
done
