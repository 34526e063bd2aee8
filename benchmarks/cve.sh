#!/usr/bin/env bash
# How long `jailbake cve` takes on a build, with a database the size of osv.dev's Debian
# and Linux ecosystems (made once by benchmarks/osv_db.py, in /var/tmp):
#   farm-bench -n 3 -- bash benchmarks/cve.sh LAYER ARTIFACTS_DIR
# The build must be in ARTIFACTS_DIR already. Exit 1 (findings) counts as a run.
set -euo pipefail
cd "$(dirname "$0")/.."
layer=$1 art=$2
db=/var/tmp/jailbake-bench-osv
if [ ! -f "$db/.complete" ]; then
    rm -rf "$db"
    .venv/bin/python -c '
import json, sys
m = json.load(open(sys.argv[1]))
print("\n".join(sorted({p["source"] for r in m["recipes"] for p in r.get("packages", [])})))
' "$art/manifest.json" > /var/tmp/jailbake-bench-osv.packages
    .venv/bin/python benchmarks/osv_db.py "$db" --packages /var/tmp/jailbake-bench-osv.packages
    touch "$db/.complete"
fi
.venv/bin/jailbake cve "$layer" --db "$db" --artifacts-dir "$art" \
    --report-dir /var/tmp/jailbake-bench-cve >/dev/null || [ $? = 1 ]
