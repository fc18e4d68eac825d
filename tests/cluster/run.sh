#!/usr/bin/env bash
# ctest's entry to tests/cluster/cluster.test.mjs: builds the JS client's
# dist/ when it is missing or older than js/src (one build at a time),
# then runs one scenario.  Usage: run.sh SCENARIO  (CRDTDB_CLI, CRDTDB_SRC set)
set -euo pipefail
: "${CRDTDB_SRC:?}" "${CRDTDB_CLI:?}"
export PATH="$PATH:/usr/sbin"
command -v haproxy >/dev/null || { echo "haproxy is not installed (.ci/install-deps)" >&2; exit 1; }
command -v node >/dev/null || { echo "node is not installed" >&2; exit 1; }
js=$CRDTDB_SRC/js
[ -d "$js/node_modules" ] || { echo "$js/node_modules is missing: npm ci in js/" >&2; exit 1; }
(
    flock 9
    if [ ! -f "$js/dist/node.js" ] || [ -n "$(find "$js/src" -newer "$js/dist/node.js" -print -quit)" ]; then
        (cd "$js" && npx tsc -p tsconfig.json)
    fi
) 9>"${TMPDIR:-/tmp}/crdtdb-js-dist.lock"
exec node "$CRDTDB_SRC/tests/cluster/cluster.test.mjs" "$1"
