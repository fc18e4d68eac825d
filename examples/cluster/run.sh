#!/usr/bin/env bash
# Three `crdtdb serve --cluster` processes and HAProxy in front of them, on
# free loopback ports, until Ctrl-C (README.md).
#
#   examples/cluster/run.sh [DIR]      DIR: where data, logs and the cluster
#                                      file go (default: a new temp dir)
#
# Environment: CRDTDB (the crdtdb binary; default build/crdtdb, else PATH),
# COLLECTIONS (default Players,Moves), REPLICAS (default 2), HAPROXY,
# CRDTDB_LB_SRC_CONNS and CRDTDB_LB_SRC_RATE (haproxy.cfg; default 200, 400),
# SERVE_ARGS (more `serve` options for every server, split on spaces, e.g.
# "--collect-every 10").
# Once everything answers, DIR/cluster.env holds the addresses and pids
# (CRDTDB_LB, CRDTDB_S1..3, S1_PID..S3_PID, HAPROXY_PID) for other scripts.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
CRDTDB=${CRDTDB:-$here/../../build/crdtdb}
[ -x "$CRDTDB" ] || CRDTDB=$(command -v crdtdb)
HAPROXY=${HAPROXY:-haproxy}
COLLECTIONS=${COLLECTIONS:-Players,Moves}
REPLICAS=${REPLICAS:-2}
read -r -a serve_args <<<"${SERVE_ARGS:-}"
dir=${1:-$(mktemp -d -t crdtdb-cluster.XXXXXX)}
mkdir -p "$dir"

pids=()
cleanup() {
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
    for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
}
trap cleanup EXIT
trap 'exit 0' INT TERM

# a port nothing listens on, below the kernel's ephemeral range (where
# outgoing connections take theirs); a race with another program that picks
# the same one at the same moment is possible but rare
used=" "
read -r eph_lo _ </proc/sys/net/ipv4/ip_local_port_range 2>/dev/null || eph_lo=32768
[ "$eph_lo" -gt 12000 ] || eph_lo=32768
free_port() {
    local p
    while :; do
        p=$((10000 + RANDOM % (eph_lo - 10000)))
        case $used in *" $p "*) continue ;; esac
        if ! (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; then
            used="$used$p "
            echo "$p"
            return
        fi
    done
}

lb=127.0.0.1:$(free_port)
s=()
for i in 1 2 3; do s[$i]=127.0.0.1:$(free_port); done

# the cluster file every server reads: one URL a line (no tokens here)
{
    echo "# crdtdb cluster file: a server per line, URL [TOKEN]"
    for i in 1 2 3; do echo "ws://${s[$i]}"; done
} > "$dir/cluster"

for i in 1 2 3; do
    data=$dir/s$i
    [ -d "$data" ] || "$CRDTDB" -d "$data" init >/dev/null
    # every connection comes from HAProxy's address: no per-address cap
    "$CRDTDB" -d "$data" serve --listen "${s[$i]}" --collections "$COLLECTIONS" \
        --cluster "$dir/cluster" --self "ws://${s[$i]}" --replicas "$REPLICAS" --handoff \
        --max-per-ip unlimited ${serve_args[@]+"${serve_args[@]}"} 2>"$dir/s$i.log" &
    pids+=($!)
    eval "S${i}_PID=$!"
done

CRDTDB_LB=$lb CRDTDB_S1=${s[1]} CRDTDB_S2=${s[2]} CRDTDB_S3=${s[3]} \
    CRDTDB_LB_SRC_CONNS=${CRDTDB_LB_SRC_CONNS:-200} CRDTDB_LB_SRC_RATE=${CRDTDB_LB_SRC_RATE:-400} \
    "$HAPROXY" -db -f "$here/haproxy.cfg" >"$dir/haproxy.log" 2>&1 &
pids+=($!)
HAPROXY_PID=$!

# ready: each server's health check (30 s: a loaded machine), then HAProxy's port
for i in 1 2 3; do
    addr=${s[$i]}
    for _ in $(seq 300); do
        curl -fs "http://$addr/healthz" >/dev/null 2>&1 && break
        sleep 0.1
    done
    curl -fs "http://$addr/healthz" >/dev/null || {
        echo "run.sh: $addr did not start; its log:" >&2
        cat "$dir/s$i.log" >&2
        exit 1
    }
done
for _ in $(seq 100); do
    (exec 3<>"/dev/tcp/${lb%:*}/${lb#*:}") 2>/dev/null && break
    kill -0 "$HAPROXY_PID" 2>/dev/null || { cat "$dir/haproxy.log" >&2; exit 1; }
    sleep 0.1
done

cat > "$dir/cluster.env.tmp" <<ENV
CRDTDB_LB=$lb
CRDTDB_S1=${s[1]}
CRDTDB_S2=${s[2]}
CRDTDB_S3=${s[3]}
S1_PID=$S1_PID
S2_PID=$S2_PID
S3_PID=$S3_PID
HAPROXY_PID=$HAPROXY_PID
ENV
mv "$dir/cluster.env.tmp" "$dir/cluster.env"
echo "clients: ws://$lb/v1/db/<id>   servers: ${s[*]}   data and logs: $dir"
echo "Ctrl-C stops them all"
# until interrupted, or until HAProxy exits; a server killed meanwhile
# (a failover demo) does not stop the rest
wait "$HAPROXY_PID"
