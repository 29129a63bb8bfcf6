#!/usr/bin/env bash
# Every test of api-web on the real stack: brings the dev stack up (installing what is missing),
# then runs the unit tests and the integration tests (tests/it) against it.
#   scripts/test.sh [extra cargo test args]
# The outage tests (tests/it/outages.rs: libvirtd, MariaDB and the Ceph OSD killed mid-operation)
# run among the others, each with the stack to itself (tests/it/common.rs: stack_alone).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
# A second libvirt host for the host tests (tests/it/hosts.rs).
scripts/dev-stack.sh up --hosts 2
eval "$(scripts/dev-stack.sh env)"
# The bootable image the instance tests import into Ceph.
API_WEB_TEST_IMAGE=$(scripts/build-test-image.sh | tail -1)
export API_WEB_TEST_IMAGE
# Shell scripts at least parse.
for s in scripts/*.sh; do bash -n "$s"; done
cargo test --locked --features failpoints "$@"
