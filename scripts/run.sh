#!/usr/bin/env bash
# Runs api-web on the local dev stack: brings the stack up (installing what is missing), then
# serves the API on http://127.0.0.1:18080 (override with API_WEB_LISTEN). Ctrl-C stops api-web;
# `scripts/dev-stack.sh down` stops the stack.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
scripts/dev-stack.sh up
eval "$(scripts/dev-stack.sh env)"
exec cargo run --locked --release -- serve "$@"
