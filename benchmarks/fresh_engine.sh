#!/usr/bin/env bash
# What a new machine's engine costs the test command: an engine whose storage starts
# empty (as CI's does), the builders' base image, then (with "all") every builder
# image of the shipped layers. Time it whole, e.g.
#   time bash benchmarks/fresh_engine.sh all
# and once with "base" to see how much of it is the builder images. Run as root.
set -euo pipefail
cd "$(dirname "$0")/.."
what=${1:-all}
storage=$(mktemp -d /var/tmp/jailbake-bench-engine.XXXXXX)
trap 'scripts/stop-engine "$storage"' EXIT
eval "$(JAILBAKE_PODMAN_STORAGE=$storage scripts/setup-engine)"
export DOCKER_HOST
# The pinned .debs from the test assets' mirror when it is there, else Debian's pool.
mirror=${JAILBAKE_TEST_ASSETS:-/var/cache/jailbake-test}/mirror
from=(); [ -d "$mirror" ] && from=(--mirror "$mirror")
.venv/bin/jailbake base-image "${from[@]}" >/dev/null
if [ "$what" = all ]; then
    .venv/bin/jailbake builders layers/rpi4-jailhouse.yml layers/qemu-arm64-jailhouse.yml \
        layers/busybox-initramfs.yml examples/hello/hello.yml "${from[@]}" >/dev/null
fi
