#!/usr/bin/env bash
# A short tour of the embedded store through the crdtdb command: create a
# database, add, update, query and remove records while a second process
# watches the change events.  Usage: examples/demo.sh [path/to/crdtdb]
set -euo pipefail
CRDTDB=${1:-build/crdtdb}
dir=$(mktemp -d)
watch=""
cleanup() { [ -n "$watch" ] && kill "$watch" 2>/dev/null; rm -rf "$dir"; }
trap cleanup EXIT
run() { echo "\$ crdtdb $*"; "$CRDTDB" -d "$dir/env" "$@"; sleep 0.1; }

run init
run create match-1 --collections players,moves
"$CRDTDB" -d "$dir/env" watch match-1 > "$dir/events" &
watch=$!
sleep 0.3 # let the watcher open the database before we write
run add match-1 players ann '{"name":"Ann","hp":100,"pos":{"x":0,"y":0}}'
run add match-1 players bob '{"name":"Bob","hp":80,"pos":{"x":5,"y":5}}'
run update match-1 players ann '{"pos":{"x":1},"hp":95}'
run get match-1 players ann
run query match-1 players '[["hp",">=",90],["pos.x","<",3]]'
run query match-1 players '{"pos":{"y":5}}'
run remove match-1 players bob
run query match-1 players
run get match-1 players bob || true
sleep 0.3
kill "$watch"; wait "$watch" 2>/dev/null || true; watch=""
echo "--- events seen by 'crdtdb watch match-1' in another process:"
cat "$dir/events"
