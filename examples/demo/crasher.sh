#!/bin/sh
# Crashes right after starting: zist backs off (doubling waits), then marks it fatal.
echo "starting up..."
sleep 0.2
echo "error: cannot open /nonexistent/database" >&2
exit 3
