#!/bin/sh
# Fails on a quoted include that climbs out of its folder ("../x/y.h"):
# such a path escapes the per-layer include roots (tests/layers/README.md).
cd "$1" || exit 2
if grep -rn '#[[:space:]]*include[[:space:]]*"[^"]*\.\./' crdt storage transport cli; then
    echo "layers: include paths with ../ (use the layer folder: \"crdt/x.h\")" >&2
    exit 1
fi
exit 0
