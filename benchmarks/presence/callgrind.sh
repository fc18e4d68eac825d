#!/bin/sh
# Instructions the server spends per presence update, under bench_presence's workload (issue #14): instruction
# counts are stable where wall-clock and CPU time on a shared machine are not.
#   sh benchmarks/presence/callgrind.sh [WORK_DIR] [bench options, default --secs=20 --idle=1]
# Builds a copy of this tree (RelWithDebInfo) in WORK_DIR (default $TMPDIR/crdtdb-presence-cg) whose environment
# map is 1 GiB, not 64 (valgrind cannot map 64 GiB of address space: `crdtdb init` fails with "I/O error"), runs
# `crdtdb serve` under callgrind for one crdtdb round of the bench, and prints the loop's instructions
# (crdtdb_server_run, inclusive) per presence frame received, with the main parts.  The fan-out's cost per update
# scales with the messages written per update (msgs_down_per_update: 15 when every receiver gets one message per
# update; fewer when the slow loop under valgrind batches), so the total is also given with the flush scaled to 15.
set -e
here=$(cd "$(dirname "$0")/../.." && pwd)
work=${1:-${TMPDIR:-/tmp}/crdtdb-presence-cg}
[ $# -gt 0 ] && shift
src=$work/src
build=$work/build
mkdir -p "$src" "$build"
(cd "$here" && git ls-files -co --exclude-standard | grep -v '^js/' | tar cf - -T -) | tar xf - -C "$src"
sed -i 's/o->map_size = (size_t)64 << 30;/o->map_size = (size_t)1 << 30;/' "$src/storage/env.c"
grep -q '(size_t)1 << 30' "$src/storage/env.c"
cmake -S "$src" -B "$build" -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
nice -n 10 cmake --build "$build" -j2 --target crdtdb_cli >/dev/null
cat >"$work/wrap.sh" <<EOF
#!/bin/sh
case " \$* " in *" serve "*) exec valgrind --tool=callgrind --callgrind-out-file=$work/cg.%p.out "$build/crdtdb" "\$@";; esac
exec "$build/crdtdb" "\$@"
EOF
chmod +x "$work/wrap.sh"
rm -f "$work"/cg.*.out
[ $# -gt 0 ] || set -- --secs=20 --idle=1
CRDTDB_BIN="$work/wrap.sh" nice -n 10 node "$here/benchmarks/bench_presence.mjs" --systems=crdtdb "$@" 2>/dev/null |
    grep '^{"bench' >"$work/bench.json"
out=$(ls "$work"/cg.*.out)
callgrind_annotate --inclusive=yes --threshold=100 "$out" >"$work/incl.txt" 2>/dev/null
callgrind_annotate --tree=caller --threshold=100 "$out" >"$work/caller.txt" 2>/dev/null
python3 - "$work" <<'EOF'
import json, re, sys
w = sys.argv[1]
b = json.load(open(f"{w}/bench.json"))
incl = {}
for l in open(f"{w}/incl.txt"):
    m = re.match(r"\s*([\d,]+) \(\s*[\d.]+%\)\s+(\S+) \[", l)
    if m:
        incl.setdefault(m.group(2).split(":")[-1], int(m.group(1).replace(",", "")))
m = re.search(r"<\s+\S+ws_link.c:crdtdb__ws_receive \(([\d,]+)x\)[^\n]*\n[^\n]*\*\s+\S+session.c:crdtdb_session_feed ",
              open(f"{w}/caller.txt").read())
n = int(m.group(1).replace(",", ""))
print(f"presence frames received {n}, messages written per update {b['msgs_down_per_update']}")
loop, fl, msgs = incl["crdtdb_server_run"] / n, incl["flush"] / n, b["msgs_down_per_update"]
print(f"loop (crdtdb_server_run) instructions per update: {loop:,.0f}; with the flush scaled to 15 messages "
      f"per update (one per receiver): {loop - fl + fl / msgs * 15:,.0f}")
for k in ["crdtdb__ws_receive", "crdtdb_session_feed", "handle", "pump.part.0", "on_turn", "forward",
          "crdtdb_presence_encode", "deliver", "crdtdb_session_send_frame", "flush", "crdtdb__ws_flush_now",
          "lws_write", "crdtdb_db_poll", "on_poll_due"]:
    if k in incl:
        print(f"  {k:28s} {incl[k] / n:8,.0f}")
EOF
