#!/usr/bin/env bash
# What `jailbake repro` costs against the build it checks, for one layer, in containers,
# offline from the test assets' mirror:
#   farm-bench -n 3 --timeout 3600 -- bash benchmarks/repro.sh repro examples/hello/hello.yml \
#       --vs 'bash benchmarks/repro.sh build examples/hello/hello.yml'
# "build": the layer from an empty cache (the builder images already in the engine);
# "repro": every recipe rebuilt under every variation and compared, its cache warm.
set -euo pipefail
cd "$(dirname "$0")/.."
mode=$1 layer=$2
mirror=${JAILBAKE_TEST_ASSETS:-/var/cache/jailbake-test}/mirror
work=/var/tmp/jailbake-bench-repro/$(basename "$layer" .yml)
args=(--offline --mirror "$mirror" --artifacts-dir "$work/art")
case $mode in
build)
    rm -rf "$work/cold"
    exec .venv/bin/jailbake build "$layer" "${args[@]}" --cache-dir "$work/cold" ;;
repro)
    .venv/bin/jailbake build "$layer" "${args[@]}" --cache-dir "$work/warm" >/dev/null 2>&1
    exec .venv/bin/jailbake repro "$layer" "${args[@]}" --cache-dir "$work/warm" ;;
*)
    echo "usage: $0 build|repro LAYER" >&2; exit 2 ;;
esac
