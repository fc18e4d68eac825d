#!/usr/bin/env bash
# crdtdb serve --cluster's flags and SIGHUP, without HAProxy: usage errors,
# a bad file refused with its line, a bad file on SIGHUP keeping the servers
# read before, a good one taken.  Usage: cli.sh (CRDTDB_CLI set)
set -euo pipefail
B=${CRDTDB_CLI:?}
dir=$(mktemp -d -t crdtdb-cluster-cli.XXXXXX)
pid=
trap '[ -z "$pid" ] || kill "$pid" 2>/dev/null || true; rm -rf "$dir"' EXIT
fail() { echo "FAIL: $*" >&2; exit 1; }
expect() { # STATUS PATTERN CMD...: exit status and a line of stderr
    local want=$1 pat=$2 st=0
    shift 2
    "$@" 2>"$dir/err" >/dev/null || st=$?
    [ "$st" = "$want" ] || fail "$* exited $st, not $want: $(cat "$dir/err")"
    grep -q -- "$pat" "$dir/err" || fail "$*: no '$pat' in: $(cat "$dir/err")"
}
"$B" -d "$dir/d" init >/dev/null
read -r lo _ </proc/sys/net/ipv4/ip_local_port_range
# a port nothing listens on (ctest -j runs the cluster tests beside this one)
while :; do
    port=$((10000 + RANDOM % (lo - 10000)))
    (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null || break
done
self=ws://127.0.0.1:$port
printf '%s\nws://127.0.0.1:1 tok\n' "$self" >"$dir/cluster"

expect 2 "go with --cluster" "$B" -d "$dir/d" serve --self "$self"
expect 2 "not with --peer" "$B" -d "$dir/d" serve --cluster "$dir/cluster" --self "$self" --peer ws://x:1
expect 2 "needs --self" "$B" -d "$dir/d" serve --cluster "$dir/cluster"
expect 2 "from 1 to 16" "$B" -d "$dir/d" serve --cluster "$dir/cluster" --self "$self" --replicas 17
expect 1 "(this server) is not in the cluster file" "$B" -d "$dir/d" serve --cluster "$dir/cluster" --self ws://127.0.0.1:2
printf '%s\nws://127.0.0.1:1\nhttp://127.0.0.1:3\n' "$self" >"$dir/bad"
expect 1 "bad: line 3: not a ws://HOST:PORT" "$B" -d "$dir/d" serve --cluster "$dir/bad" --self "$self"
expect 1 "No such file" "$B" -d "$dir/d" serve --cluster "$dir/none" --self "$self"

# SIGHUP: a bad file keeps the servers read before; a good one is taken
"$B" -d "$dir/d" serve --listen "127.0.0.1:$port" --cluster "$dir/cluster" --self "$self" \
    --collections A 2>"$dir/log" &
pid=$!
# up (30 s: a loaded machine), its SIGHUP handler set: a SIGHUP before would kill it
for _ in $(seq 300); do curl -fs "http://127.0.0.1:$port/healthz" >/dev/null 2>&1 && break; sleep 0.1; done
curl -fs "http://127.0.0.1:$port/healthz" >/dev/null || fail "the server did not start: $(cat "$dir/log")"
cp "$dir/bad" "$dir/cluster"
kill -HUP "$pid"
for _ in $(seq 100); do grep -q "SIGHUP: $dir/cluster: line 3" "$dir/log" && break; sleep 0.1; done
grep -q "SIGHUP: $dir/cluster: line 3: not a ws://" "$dir/log" || fail "no SIGHUP refusal in: $(cat "$dir/log")"
printf '%s\nws://127.0.0.1:1\nws://127.0.0.1:3\n' "$self" >"$dir/cluster"
kill -HUP "$pid"
for _ in $(seq 100); do grep -q "re-read: 3 servers" "$dir/log" && break; sleep 0.1; done
grep -q "re-read: 3 servers" "$dir/log" || fail "no reload in: $(cat "$dir/log")"
grep -q "peering with ws://127.0.0.1:3" "$dir/log" || fail "the new server is not peered: $(cat "$dir/log")"
# a rotated token re-peers its server (its links present the new one); a
# server gone from the file is unpeered
n1=$(grep -c "peering with ws://127.0.0.1:1" "$dir/log")
printf '%s\nws://127.0.0.1:1 tok2\n' "$self" >"$dir/cluster"
kill -HUP "$pid"
for _ in $(seq 100); do grep -q "re-read: 2 servers" "$dir/log" && break; sleep 0.1; done
grep -q "re-read: 2 servers" "$dir/log" || fail "no second reload in: $(cat "$dir/log")"
grep -q "unpeered ws://127.0.0.1:3" "$dir/log" || fail "the server gone from the file is still peered: $(cat "$dir/log")"
[ "$(grep -c "peering with ws://127.0.0.1:1" "$dir/log")" -gt "$n1" ] ||
    fail "the rotated token did not re-peer its server: $(cat "$dir/log")"
curl -fs "http://127.0.0.1:$port/healthz" >/dev/null || fail "the server stopped"
kill "$pid"
wait "$pid" || fail "serve exited $? on SIGTERM"
pid=
echo "cluster cli: usage errors, file errors with their line, SIGHUP refused and taken, tokens rotated, servers unpeered"
