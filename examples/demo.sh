#!/usr/bin/env bash
# A short tour through the crdtdb command: create a database, add, update,
# query and remove records while a second process watches the change events;
# then a second replica joins, both write offline, and they converge by
# carrying signed delta files both ways; last, a server on 127.0.0.1 syncs
# them live over WebSocket.  Usage: examples/demo.sh [crdtdb]
set -euo pipefail
CRDTDB=${1:-build/crdtdb}
dir=$(mktemp -d)
watch=""
server=""
cleanup() {
  [ -n "$watch" ] && kill "$watch" 2>/dev/null
  [ -n "$server" ] && kill "$server" 2>/dev/null
  wait 2>/dev/null
  rm -rf "$dir"
}
trap cleanup EXIT
run() { echo "\$ crdtdb $*"; "$CRDTDB" -d "$dir/env" "$@"; sleep 0.1; }
# the second replica, on "another laptop"
run2() { echo "laptop-2\$ crdtdb $*"; "$CRDTDB" -d "$dir/env2" "$@"; }

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

echo
echo "--- a second replica joins; both write while apart; files carry the changes"
run2 init >/dev/null
run2 create match-1 --collections players,moves
A=$("$CRDTDB" -d "$dir/env" id)
B=$("$CRDTDB" -d "$dir/env2" id)
run export match-1 --for "$B" -o "$dir/to-laptop-2.delta"
run2 import "$dir/to-laptop-2.delta"
run update match-1 players ann '{"hp":90}'          # laptop 1, offline
sleep 0.05
run2 update match-1 players ann '{"pos":{"y":7}}'   # laptop 2, offline: another field
run2 add match-1 moves m1 '{"by":"ann","to":"e4"}'
run2 export match-1 --for "$A" -o "$dir/to-laptop-1.delta"
run export match-1 --for "$B" -o "$dir/to-laptop-2.delta"
run import "$dir/to-laptop-1.delta"
run2 import "$dir/to-laptop-2.delta"
run2 import "$dir/to-laptop-2.delta"               # again: harmless
run get match-1 players ann
run2 get match-1 players ann
run peers match-1
same() {
  [ "$("$CRDTDB" -d "$dir/env" query match-1 moves)$("$CRDTDB" -d "$dir/env" query match-1 players)" = \
    "$("$CRDTDB" -d "$dir/env2" query match-1 moves)$("$CRDTDB" -d "$dir/env2" query match-1 players)" ]
}
if same; then echo "both replicas converged"; else echo "replicas differ" >&2; exit 1; fi

echo
echo "--- live: a server on 127.0.0.1; laptop 2 stays connected and sees laptop 1's writes"
port=$((20000 + RANDOM % 20000))
url="ws://127.0.0.1:$port"
"$CRDTDB" -d "$dir/server" init >/dev/null
"$CRDTDB" -d "$dir/server" serve --listen "127.0.0.1:$port" --collections players,moves \
  2> "$dir/server.log" &
server=$!
for _ in $(seq 50); do # wait until it listens
  grep -q listening "$dir/server.log" 2>/dev/null && break
  sleep 0.1
done
echo "\$ crdtdb serve --listen 127.0.0.1:$port --collections players,moves &"
"$CRDTDB" -d "$dir/env2" sync "$url" --db match-1 --watch > "$dir/live" 2>/dev/null &
watch=$!
echo "laptop-2\$ crdtdb sync $url --db match-1 --watch &"
run sync "$url" --db match-1
run update match-1 players ann '{"hp":85}'
run sync "$url" --db match-1
sleep 0.5
kill "$watch"; wait "$watch" 2>/dev/null || true; watch=""
echo "--- what laptop 2 printed while connected (one JSON line per change):"
cat "$dir/live"
run2 get match-1 players ann
if same; then echo "both replicas converged live"; else echo "replicas differ" >&2; exit 1; fi
echo "--- laptop 2 is offline now; both write; it comes back and both converge"
run2 update match-1 players ann '{"pos":{"x":2}}'
run add match-1 moves m9 '{"to":"g5"}'
run2 sync "$url" --db match-1   # sends its offline write
run sync "$url" --db match-1    # sends m9, gets laptop 2's write
run2 sync "$url" --db match-1   # gets m9
run2 get match-1 moves m9
run get match-1 players ann
if same; then echo "both replicas converged after the offline writes"; else echo "replicas differ" >&2; exit 1; fi
