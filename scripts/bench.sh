#!/usr/bin/env bash
# Benchmarks on the real stack (release build): scripts/bench.sh [images|instances|volumes|nics|burst|events|reconcile|rss|auth|quota|metrics|snapshots|uploads|placement|migrate|replicas]
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
scripts/dev-stack.sh up --hosts 2
eval "$(scripts/dev-stack.sh env)"
API_WEB_TEST_IMAGE=$(scripts/build-test-image.sh | tail -1)
export API_WEB_TEST_IMAGE
if [ $# -gt 0 ]; then cargo bench --locked --bench "$1"; else cargo bench --locked; fi
