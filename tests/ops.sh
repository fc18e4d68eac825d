#!/bin/bash
# The operations of `crdtdb serve` (docs/operations.md), with real
# processes on 127.0.0.1: GET /metrics passes `promtool check metrics` and
# its values move with what clients do; a real Prometheus scrapes it;
# --log-format json writes JSON lines; --config FILE is its flags;
# SIGTERM under load loses no acknowledged write.
#   tests/ops.sh CRDTDB_BINARY [section...]   (sections: metrics prometheus
#   logs config drain; default all).  Exit 77 (skipped) without promtool,
#   prometheus, curl or jq (.ci/install-deps installs them).
set -euo pipefail
B=$1
shift
SECTIONS=${*:-metrics prometheus logs config drain}
for tool in promtool prometheus curl jq python3; do
    command -v $tool >/dev/null || { echo "skip: no $tool"; exit 77; }
done
T=$(mktemp -d)
PIDS=()
cleanup() {
    for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
    for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null || true; done
    if [ -n "${OPS_KEEP:-}" ]; then echo "kept $T" >&2; else rm -rf "$T"; fi
}
trap cleanup EXIT
fail() { echo "FAIL: $*" >&2; exit 1; }
c() { "$B" "$@"; }

# wait_for FILE TEXT [SECONDS]: until FILE holds TEXT
wait_for() {
    for _ in $(seq $((${3:-10} * 20))); do
        grep -qF -- "$2" "$1" 2>/dev/null && return 0
        sleep 0.05
    done
    fail "no '$2' in $1 after ${3:-10} s: $(tail -5 "$1" 2>/dev/null)"
}

# serve DIR ARGS...: starts crdtdb serve on 127.0.0.1:0 with ARGS (the
# server's log in DIR.err); sets PID and PORT
serve() {
    local dir=$1
    shift
    "$B" -d "$dir" serve "$@" 2>"$dir.err" &
    PID=$!
    PIDS+=("$PID")
    wait_for "$dir.err" "listening on ws://127.0.0.1:"
    PORT=$(grep -o 'listening on ws://127.0.0.1:[0-9]*' "$dir.err" | head -1 | sed 's/.*://')
}

# metric NAME_WITH_LABELS: its value in the last scrape ($T/scrape)
metric() {
    awk -v n="$1" '$1 == n { print $2; found = 1 } END { if (!found) print "missing" }' \
        "$T/scrape"
}
scrape() { curl -sf "http://127.0.0.1:$PORT/metrics" >"$T/scrape"; }

# expect NAME OP VALUE: the metric compares so (-ge, -eq, ...)
expect() {
    local v
    v=$(metric "$1")
    [ "$v" != missing ] || fail "$1 missing from /metrics"
    [ "${v%.*}" "$2" "$3" ] || fail "$1 is $v, expected $2 $3"
}

free_port() {
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

has() { [[ " $SECTIONS " == *" $1 "* ]]; }

# ------------------------------------------------- one server, one client
c -d "$T/s" init >/dev/null
c -d "$T/c" init >/dev/null
c -d "$T/c" create m --collections a
for i in 1 2 3 4 5; do c -d "$T/c" add m a "r$i" "{\"i\":$i}"; done
serve "$T/s" --listen 127.0.0.1:0 --collections a --log-format json
URL="ws://127.0.0.1:$PORT"

if has metrics; then
    scrape
    promtool check metrics <"$T/scrape" || fail "promtool check metrics (fresh server)"
    expect crdtdb_deltas_in_total -eq 0
    expect crdtdb_deltas_out_total -eq 0
    expect crdtdb_commit_duration_seconds_count -eq 0
    expect crdtdb_draining -eq 0
    c -d "$T/c" sync "$URL" --db m >/dev/null 2>&1 || fail "sync"
    # a second replica, new: the server sends it the first one's records
    c -d "$T/c2" init >/dev/null
    c -d "$T/c2" create m --collections a
    c -d "$T/c2" sync "$URL" --db m >/dev/null 2>&1 || fail "sync of a new replica"
    [ "$(c -d "$T/c2" query m a | jq length)" = 5 ] || fail "the new replica lacks the records"
    # an upgrade to a path that is not /v1/db/<id>: refused with 404, counted
    curl -s -o /dev/null -H "Connection: Upgrade" -H "Upgrade: websocket" \
        -H "Sec-WebSocket-Version: 13" -H "Sec-WebSocket-Key: x3JJHMbDL1EzLkh9GBhXDw==" \
        -H "Sec-WebSocket-Protocol: crdtdb-sync" "http://127.0.0.1:$PORT/elsewhere" || true
    scrape
    promtool check metrics <"$T/scrape" || fail "promtool check metrics (after a sync)"
    expect crdtdb_connections_accepted_total -eq 2
    expect crdtdb_deltas_in_total -ge 1
    expect crdtdb_changes_in_total -ge 5
    expect crdtdb_bytes_in_total -gt 0
    expect crdtdb_bytes_out_total -gt 0
    expect crdtdb_apply_duration_seconds_count -ge 1
    expect 'crdtdb_apply_duration_seconds_bucket{le="+Inf"}' -ge 1
    expect crdtdb_deltas_out_total -ge 1
    # every apply committed once: the commit histogram counts as many
    [ "$(metric crdtdb_commit_duration_seconds_count)" = \
      "$(metric crdtdb_apply_duration_seconds_count)" ] || fail "commits and applies differ"
    expect 'crdtdb_commit_duration_seconds_bucket{le="+Inf"}' -ge 1
    expect 'crdtdb_connections_refused_total{status="404"}' -eq 1
    expect 'crdtdb_refused_total{reason="ECLOCK"}' -eq 0
    [ "$(c -d "$T/s" query m a | jq length)" = 5 ] || fail "the server lacks the client's records"
    echo "ok: /metrics passes promtool and moves with a sync"
fi

# a client that stays, with a presence: gauges
"$B" -d "$T/c" sync "$URL" --db m --watch --presence '{"name":"ann"}' >"$T/w.out" 2>"$T/w.err" &
WATCH=$!
PIDS+=("$WATCH")
for _ in $(seq 200); do
    scrape
    [ "$(metric 'crdtdb_connections{mode="two_way"}')" = 1 ] &&
        [ "$(metric crdtdb_presence_members)" = 1 ] && break
    sleep 0.05
done
if has metrics; then
    expect 'crdtdb_connections{mode="two_way"}' -eq 1
    expect crdtdb_presence_members -eq 1
    expect crdtdb_databases_open -eq 1
    promtool check metrics <"$T/scrape" || fail "promtool check metrics (a client connected)"
    echo "ok: connection, database and presence gauges"
fi

# early relay: a write another replica syncs reaches the caught-up watcher
# before the server's commit (docs/operations.md, "Early relay"); the first
# write after the server opened the database goes after its commit (it
# starts past the reservation), the next one early
for r in r9 r10; do
    c -d "$T/c2" add m a $r '{"i":9}'
    c -d "$T/c2" sync "$URL" --db m >/dev/null 2>&1 || fail "sync of $r"
    for _ in $(seq 200); do
        [ "$(c -d "$T/c" get m a $r 2>/dev/null)" = "{\"id\":\"$r\",\"i\":9}" ] && break
        sleep 0.05
    done
    [ "$(c -d "$T/c" get m a $r 2>/dev/null)" = "{\"id\":\"$r\",\"i\":9}" ] || fail "the watcher lacks $r"
done
if has metrics; then
    scrape
    expect crdtdb_deltas_early_total -ge 1
    echo "ok: the watcher got the write early"
fi

# ------------------------------------------------ a real Prometheus scrape
if has prometheus; then
    PP=$(free_port)
    mkdir -p "$T/prom"
    cat >"$T/prom/prometheus.yml" <<EOF
global:
  scrape_interval: 1s
scrape_configs:
  - job_name: crdtdb
    static_configs:
      - targets: ['127.0.0.1:$PORT']
EOF
    prometheus --config.file="$T/prom/prometheus.yml" --storage.tsdb.path="$T/prom/data" \
        --web.listen-address="127.0.0.1:$PP" >"$T/prom.log" 2>&1 &
    PIDS+=("$!")
    q="query=crdtdb_connections%7Bmode%3D%22two_way%22%7D"
    got=""
    for _ in $(seq 600); do # up to 30 s: start, first scrape
        got=$(curl -sf "http://127.0.0.1:$PP/api/v1/query?$q" |
            jq -r '.data.result[0].value[1] // empty' 2>/dev/null || true)
        [ "$got" = 1 ] && break
        sleep 0.05
    done
    [ "$got" = 1 ] || fail "Prometheus has no crdtdb_connections{mode=\"two_way\"} 1: $(tail -3 "$T/prom.log")"
    up=$(curl -sf "http://127.0.0.1:$PP/api/v1/query?query=up%7Bjob%3D%22crdtdb%22%7D" |
        jq -r '.data.result[0].value[1]')
    [ "$up" = 1 ] || fail "Prometheus says the target is not up ($up)"
    n=$(curl -sf "http://127.0.0.1:$PP/api/v1/query?query=crdtdb_deltas_in_total" |
        jq -r '.data.result[0].value[1]')
    [ "${n:-0}" -ge 1 ] || fail "Prometheus has crdtdb_deltas_in_total $n"
    echo "ok: Prometheus scrapes crdtdb_connections and crdtdb_deltas_in_total"
fi

# a database id chosen to forge a JSON log line's fields (its quote ends
# the id where a naive reader would, and "out of memory" reads as an error)
EVIL="victim' out of memory x"
c -d "$T/c" create "$EVIL" --collections a
c -d "$T/c" add "$EVIL" a r1 '{"i":1}'
c -d "$T/c" sync "$URL" --db "$EVIL" >/dev/null 2>&1 || fail "sync of a database with a quote in its id"
kill -TERM "$WATCH"
wait "$WATCH" 2>/dev/null || true
kill -TERM "$PID"
wait "$PID" || fail "serve did not exit 0 on SIGTERM"

# ------------------------------------------------------ JSON log lines
if has logs; then
    jq -e -c 'select((.ts | test("^[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}\\.[0-9]{3}Z$"))
              and (.level | IN("info","warn","error")) and (.msg | type == "string"))' \
        <"$T/s.err" >"$T/s.jsonl" || fail "log lines that are not JSON: $(head -3 "$T/s.err")"
    [ "$(wc -l <"$T/s.jsonl")" = "$(wc -l <"$T/s.err")" ] ||
        fail "log lines without ts, level or msg"
    jq -e -s 'map(select(.db == "m" and .peer == "127.0.0.1")) | length > 0' "$T/s.jsonl" \
        >/dev/null || fail "no line with db and peer fields"
    jq -e -s --arg evil "$EVIL" 'map(select(.db == $evil)) | length > 0' "$T/s.jsonl" >/dev/null ||
        fail "no line names the database with a quote in its id: $(grep victim "$T/s.jsonl" | head -3)"
    jq -e -s 'map(select(.db == "victim")) | length == 0' "$T/s.jsonl" >/dev/null ||
        fail "a quote in an id cut the db field short"
    jq -e -s --arg evil "$EVIL" 'map(select(.db == $evil and .level == "error")) | length == 0' \
        "$T/s.jsonl" >/dev/null || fail "an id's words made an error line"
    jq -e -s 'map(select(.level == "warn" and (.msg | test("refused: 404")))) | length == 1' \
        "$T/s.jsonl" >/dev/null || fail "the refusal is not one warn line"
    jq -e -s 'map(select(.msg == "drained: exiting")) | length == 1' "$T/s.jsonl" >/dev/null ||
        fail "no drained line"
    echo "ok: --log-format json: $(wc -l <"$T/s.jsonl") lines, each one JSON object"
fi

# ------------------------------------------------- --config is its flags
if has config; then
    cat >"$T/serve.conf" <<EOF
# the same as: --listen 127.0.0.1:0 --collections a --max-connections 1
#              --metrics off --log-format json
listen 127.0.0.1:0
collections = a
max-connections=1

  metrics   off
log-format json
EOF
    c -d "$T/c" create cfg --collections a
    # by flags, then by the file: the same answers
    for how in flags file; do
        rm -rf "$T/k"
        c -d "$T/k" init >/dev/null
        if [ $how = flags ]; then
            serve "$T/k" --listen 127.0.0.1:0 --collections a --max-connections 1 \
                --metrics off --log-format json
        else
            serve "$T/k" --config "$T/serve.conf"
        fi
        head -1 "$T/k.err" | jq -e .msg >/dev/null || fail "$how: log is not JSON"
        code=$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$PORT/metrics")
        [ "$code" = 404 ] || fail "$how: --metrics off answered $code"
        "$B" -d "$T/c" sync "ws://127.0.0.1:$PORT" --db cfg --watch >/dev/null 2>"$T/k.w.err" &
        W=$!
        PIDS+=("$W")
        wait_for "$T/k.err" "ready, two-way" # created from --collections a
        if c -d "$T/c" sync "ws://127.0.0.1:$PORT" --db cfg --timeout 5 >/dev/null 2>"$T/k.e"; then
            fail "$how: a second connection got past --max-connections 1"
        fi
        grep -q "refused: 503" "$T/k.err" || fail "$how: no 503 refusal logged"
        kill -TERM "$W" "$PID"
        wait "$W" 2>/dev/null || true
        wait "$PID" || fail "$how: serve did not exit 0"
    done
    # a flag after --config overrides the file
    rm -rf "$T/k"
    c -d "$T/k" init >/dev/null
    serve "$T/k" --config "$T/serve.conf" --metrics local --log-format text
    code=$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$PORT/metrics")
    [ "$code" = 200 ] || fail "--metrics local after --config: $code"
    head -1 "$T/k.err" | grep -q '^listening on' || fail "--log-format text after --config"
    kill -TERM "$PID"
    wait "$PID" || fail "serve did not exit 0"
    # an unknown name is refused, naming the file and line
    printf 'listen 127.0.0.1:0\n# fine\nlisten-on 127.0.0.1:1\n' >"$T/bad.conf"
    set +e
    c -d "$T/k" serve --config "$T/bad.conf" 2>"$T/bad.err"
    rc=$?
    set -e
    [ $rc = 2 ] || fail "unknown setting: exit $rc"
    grep -qF "$T/bad.conf:3: unknown setting 'listen-on'" "$T/bad.err" ||
        fail "unknown setting: $(cat "$T/bad.err")"
    printf 'watch\n' >"$T/bad.conf" # sync's flag, not serve's
    if c -d "$T/k" serve --config "$T/bad.conf" 2>"$T/bad.err"; then fail "watch taken"; fi
    grep -qF "bad.conf:1: unknown setting 'watch'" "$T/bad.err" || fail "$(cat "$T/bad.err")"
    echo "ok: --config FILE behaves as its flags; later flags override; unknown names refused"
fi

# ----------------------------------- SIGTERM under load loses no acked write
if has drain; then
    N=160
    c -d "$T/d" init >/dev/null
    c -d "$T/dc" init >/dev/null
    c -d "$T/dc" create load --collections a
    SID=$(c -d "$T/d" id)
    serve "$T/d" --listen 127.0.0.1:0 --collections a
    DPORT=$PORT
    DPID=$PID
    "$B" -d "$T/dc" sync "ws://127.0.0.1:$DPORT" --db load --watch >/dev/null 2>"$T/dw.err" &
    W=$!
    PIDS+=("$W")
    wait_for "$T/d.err" "ready, two-way"
    : >"$T/seqs"
    for i in $(seq $N); do
        c -d "$T/dc" add load a "r$i" "{\"i\":$i}"
        echo "r$i $(c -d "$T/dc" stats load | jq .seq)" >>"$T/seqs"
        if [ "$i" = $((N / 2)) ]; then kill -TERM "$DPID"; fi # mid-way, while it writes
    done
    wait "$DPID" || fail "serve did not exit 0 on SIGTERM under load"
    kill -TERM "$W"
    wait "$W" 2>/dev/null || true
    acked=$(c -d "$T/dc" peers load | awk -v id="$SID" '$1 == id { print $5 }')
    [ -n "$acked" ] || fail "the client knows no acks from the server"
    # every record the server acknowledged is in its store after the exit
    total=0
    present=0
    while read -r id seq; do
        [ "$seq" -le "$acked" ] || continue
        total=$((total + 1))
        if c -d "$T/d" get load a "$id" >/dev/null 2>&1; then present=$((present + 1)); fi
    done <"$T/seqs"
    [ "$total" -ge 1 ] || fail "nothing was acknowledged before SIGTERM"
    [ "$present" = "$total" ] || fail "acknowledged $total writes, $present on the server"
    # restarted, the server gets the rest: nothing is lost
    serve "$T/d" --listen 127.0.0.1:0 --collections a
    c -d "$T/dc" sync "ws://127.0.0.1:$PORT" --db load >/dev/null 2>&1 || fail "sync after restart"
    n=$(c -d "$T/d" query load a | jq length)
    [ "$n" = $N ] || fail "after the restart the server holds $n of $N records"
    kill -TERM "$PID"
    wait "$PID" || fail "serve did not exit 0"
    echo "ok: SIGTERM under load: $present of $total acknowledged writes present after exit" \
        "(of $N written); all $N after a restart"
fi
echo "ops: all passed"
