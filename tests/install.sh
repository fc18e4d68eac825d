#!/usr/bin/env bash
# What an embedder does: install into a fresh prefix, build examples/store.c
# against pkg-config crdtdb and examples/game.c against crdtdb_ws, run the
# store example.  Run by ctest (test "install").
#
#   tests/install.sh BUILD_DIR SOURCE_DIR CC [CFLAGS]
# CFLAGS: what the examples need beyond pkg-config's (a sanitizer build's
# -fsanitize flags).
set -euo pipefail
build=$1 src=$2 cc=$3 cflags=${4:-}
work=$(mktemp -d "${TMPDIR:-/tmp}/crdtdb-install.XXXXXX")
trap 'rm -rf "$work"' EXIT
cmake --install "$build" --prefix "$work/prefix" >/dev/null
pc=$(find "$work/prefix" -name crdtdb.pc -printf '%h')
export PKG_CONFIG_PATH=$pc
lib=$(pkg-config --variable=libdir crdtdb)
# shellcheck disable=SC2046,SC2086 # word splitting is wanted: compiler flags
"$cc" -std=c11 $cflags -o "$work/store" "$src/examples/store.c" $(pkg-config --cflags --libs crdtdb)
# shellcheck disable=SC2046,SC2086
"$cc" -std=c11 $cflags -D_POSIX_C_SOURCE=200809L -o "$work/game" "$src/examples/game.c" \
    $(pkg-config --cflags --libs crdtdb_ws)
# crdtdb.pc alone does not bring libcrdtdb_ws
if pkg-config --libs crdtdb | grep -q crdtdb_ws; then
    echo "install: crdtdb.pc links libcrdtdb_ws" >&2
    exit 1
fi
LD_LIBRARY_PATH=$lib "$work/store" "$work/data" >"$work/out"
grep -q '^event: remove players/bob' "$work/out"
echo "install: store and game built against the installed crdtdb.pc and crdtdb_ws.pc"
