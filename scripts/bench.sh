#!/usr/bin/env bash
# Benchmarks on the real stack (release build): scripts/bench.sh [bench name, e.g. images]
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
scripts/dev-stack.sh up
eval "$(scripts/dev-stack.sh env)"
if [ $# -gt 0 ]; then cargo bench --locked --bench "$1"; else cargo bench --locked; fi
