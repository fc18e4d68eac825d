#!/bin/sh
# libcrdtdb stays free of the WebSocket stack: none of libwebsockets,
# libjwt, OpenSSL or libuv among the shared library's DT_NEEDED entries
# (its link refuses undefined symbols, so it cannot call them either).
#
#   tests/layers/needed.sh LIBCRDTDB.so
needed=$(objdump -p "$1" | awk '$1 == "NEEDED" {print $2}') || exit 2
[ -n "$needed" ] || exit 2
if echo "$needed" | grep -E 'websockets|jwt|libuv|libssl|libcrypto'; then
    echo "layers: $1 needs the WebSocket stack (above)" >&2
    exit 1
fi
echo "$needed"
