#!/usr/bin/env bash
# After `scripts/run.sh` is serving: builds the bootable test image, imports it into the Ceph
# images pool and registers it through the API, then prints the curl that boots an instance.
#   scripts/quickstart.sh            (API at $API_WEB_URL, default http://127.0.0.1:18080)
# It calls the API with the admin key in $API_WEB_KEY, or makes one (`api-web admin create-key`).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
API=${API_WEB_URL:-http://127.0.0.1:18080}
eval "$(scripts/dev-stack.sh env)"
curl -sf "$API/api/v1/version" >/dev/null || { echo "api-web does not answer at $API: start scripts/run.sh first" >&2; exit 1; }
if [ -z "${API_WEB_KEY:-}" ]; then
  API_WEB_KEY=$(cargo run --locked --release -q -- admin create-key --name quickstart | tail -1)
  echo "made the admin key 'quickstart' (revoke it with: api-web admin revoke-key quickstart)" >&2
fi
AUTH="Authorization: Bearer $API_WEB_KEY"
IMG=$(scripts/build-test-image.sh | tail -1)
ID=api-web-test-image
if ! rbd info "$CEPH_IMAGES_POOL/$ID" >/dev/null 2>&1; then
  rbd import --no-progress "$IMG" "$CEPH_IMAGES_POOL/$ID"
fi
SIZE=$(rbd info --format json "$CEPH_IMAGES_POOL/$ID" | sed -n 's/.*"size":\([0-9]*\).*/\1/p')
curl -s "$API/api/v1/images/register" -H "$AUTH" \
  -d "{\"image_id\":\"$ID\",\"image_name\":\"api-web test image\",\"image_size\":$SIZE,\"os_type\":\"Linux\",\"describe\":\"tiny BIOS-bootable busybox guest\"}"
echo
cat <<MSG

Image $ID is registered. Boot an instance from it:

  export API_WEB_KEY=$API_WEB_KEY
  curl -s -H "Authorization: Bearer \$API_WEB_KEY" $API/api/v1/instance/create -d '{"instance_name":"hello","image_id":"$ID","cpu":1,"memory":256}'
  curl -s -H "Authorization: Bearer \$API_WEB_KEY" '$API/api/v1/instance/progress?instance_id=i-...'
  curl -s -H "Authorization: Bearer \$API_WEB_KEY" '$API/api/v1/instance/console?instance_id=i-...'    # shows API-WEB-GUEST-BOOTED
MSG
