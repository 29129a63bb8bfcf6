#!/usr/bin/env bash
# Provisions an EXISTING Ceph cluster for api-web, and one hypervisor host's libvirt.
#
# Steps (each skipped when already done, so running it twice is harmless):
#   1. pools      create the images and volumes pools with the given PG counts
#   2. rbd init   initialise both pools for RBD (`rbd pool init`)
#   3. users      create (or fix the caps of) two cephx users, least privilege:
#                   client.<api-user>   the control plane: `profile rbd` on both pools
#                   client.<qemu-user>  QEMU on the hypervisors: `profile rbd` on volumes,
#                                       `profile rbd-read-only` on images (clone parents)
#   4. keyrings   write both users' keyrings into --keyring-dir (mode 0600)
#   5. secret     define a libvirt secret (usage ceph) holding the QEMU user's key on the
#                 hypervisor at --libvirt-uri (skip with --no-secret; run once per hypervisor)
#   6. snippet    print the [ceph] section for api-web's config.toml
#
# Options:
#   --conf PATH          ceph.conf of the cluster (default: $CEPH_CONF or /etc/ceph/ceph.conf)
#   --admin-id ID        cephx id allowed to create pools and users (default: admin)
#   --images-pool NAME   default: images
#   --volumes-pool NAME  default: volumes
#   --pg-num N           PGs of both pools (default: 64, as in the original design)
#   --images-pg N        PGs of the images pool (overrides --pg-num)
#   --volumes-pg N       PGs of the volumes pool (overrides --pg-num)
#   --api-user ID        default: api-web
#   --qemu-user ID       default: libvirt
#   --keyring-dir DIR    default: /etc/ceph
#   --libvirt-uri URI    default: qemu:///system
#   --secret-uuid UUID   default: the existing secret for the QEMU user, else a new UUID
#   --no-secret          skip step 5
#   --dry-run            print the commands that would run, change nothing
#   -h, --help           this text
set -euo pipefail

CONF=${CEPH_CONF:-/etc/ceph/ceph.conf}
ADMIN=admin
IMAGES=images
VOLUMES=volumes
PG=64
IMAGES_PG=
VOLUMES_PG=
API_USER=api-web
QEMU_USER=libvirt
KEYDIR=/etc/ceph
LIBVIRT_URI=qemu:///system
SECRET_UUID=
DO_SECRET=1
DRY=0

usage() { sed -n '2,/^set -euo/p' "$0" | sed '$d' | sed 's/^# \{0,1\}//'; }
die() { printf 'ceph-provision: ERROR: %s\n' "$*" >&2; exit 1; }
say() { printf 'ceph-provision: %s\n' "$*" >&2; }

while [ $# -gt 0 ]; do
  case "$1" in
    --conf) CONF=$2; shift ;;
    --admin-id) ADMIN=$2; shift ;;
    --images-pool) IMAGES=$2; shift ;;
    --volumes-pool) VOLUMES=$2; shift ;;
    --pg-num) PG=$2; shift ;;
    --images-pg) IMAGES_PG=$2; shift ;;
    --volumes-pg) VOLUMES_PG=$2; shift ;;
    --api-user) API_USER=$2; shift ;;
    --qemu-user) QEMU_USER=$2; shift ;;
    --keyring-dir) KEYDIR=$2; shift ;;
    --libvirt-uri) LIBVIRT_URI=$2; shift ;;
    --secret-uuid) SECRET_UUID=$2; shift ;;
    --no-secret) DO_SECRET=0 ;;
    --dry-run) DRY=1 ;;
    -h|--help) usage; exit 0 ;;
    *) usage >&2; die "unknown option: $1" ;;
  esac
  shift
done
IMAGES_PG=${IMAGES_PG:-$PG}
VOLUMES_PG=${VOLUMES_PG:-$PG}

name_ok() { [[ $1 =~ ^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$ ]]; }
for v in "$IMAGES" "$VOLUMES" "$API_USER" "$QEMU_USER" "$ADMIN"; do
  name_ok "$v" || die "invalid pool or user name: '$v'"
done
[ "$IMAGES" != "$VOLUMES" ] || die "--images-pool and --volumes-pool must differ"
for n in "$IMAGES_PG" "$VOLUMES_PG"; do
  [[ $n =~ ^[1-9][0-9]*$ ]] || die "PG counts must be positive integers, got '$n'"
done
[ -n "$SECRET_UUID" ] && { [[ $SECRET_UUID =~ ^[0-9a-fA-F]{8}-([0-9a-fA-F]{4}-){3}[0-9a-fA-F]{12}$ ]] || die "invalid --secret-uuid"; }
[ -r "$CONF" ] || die "cannot read $CONF (use --conf or CEPH_CONF)"

CEPH=(ceph --conf "$CONF" --id "$ADMIN")
RBD=(rbd --conf "$CONF" --id "$ADMIN")
VIRSH=(virsh -c "$LIBVIRT_URI")

# run CMD...: runs it, or in dry-run mode prints it.
run() {
  if [ $DRY = 1 ]; then printf '+'; printf ' %q' "$@"; printf '\n'; else "$@"; fi
}

"${CEPH[@]}" --connect-timeout 15 status >/dev/null 2>&1 || die "cannot reach the cluster with $CONF as client.$ADMIN"

# 1 + 2. pools
pools=$("${CEPH[@]}" osd pool ls)
for spec in "$IMAGES:$IMAGES_PG" "$VOLUMES:$VOLUMES_PG"; do
  pool=${spec%%:*} pg=${spec##*:}
  if grep -qx "$pool" <<<"$pools"; then
    say "pool $pool exists"
  else
    say "creating pool $pool with $pg PGs"
    run "${CEPH[@]}" osd pool create "$pool" "$pg" "$pg"
  fi
  if [ $DRY = 0 ] && "${CEPH[@]}" osd pool application get "$pool" 2>/dev/null | grep -q '"rbd"'; then
    say "pool $pool is initialised for rbd"
  else
    run "${RBD[@]}" pool init "$pool"
  fi
done

# 3 + 4. users and keyrings
ensure_user() { # ensure_user ID MON_CAPS OSD_CAPS
  local id=$1 mon=$2 osd=$3
  if "${CEPH[@]}" auth get "client.$id" >/dev/null 2>&1; then
    say "user client.$id exists: setting its caps"
    run "${CEPH[@]}" auth caps "client.$id" mon "$mon" osd "$osd"
  else
    say "creating user client.$id"
    run "${CEPH[@]}" auth get-or-create "client.$id" mon "$mon" osd "$osd"
  fi
  run mkdir -p "$KEYDIR"
  if [ $DRY = 1 ]; then
    run "${CEPH[@]}" auth get "client.$id" -o "$KEYDIR/ceph.client.$id.keyring"
  else
    (umask 077; "${CEPH[@]}" auth get "client.$id" -o "$KEYDIR/ceph.client.$id.keyring" 2>/dev/null)
    say "wrote $KEYDIR/ceph.client.$id.keyring"
  fi
}
ensure_user "$API_USER" 'profile rbd' "profile rbd pool=$IMAGES, profile rbd pool=$VOLUMES"
ensure_user "$QEMU_USER" 'profile rbd' "profile rbd pool=$VOLUMES, profile rbd-read-only pool=$IMAGES"

# 5. libvirt secret
USAGE="client.$QEMU_USER secret"
if [ $DO_SECRET = 1 ]; then
  if [ -z "$SECRET_UUID" ]; then
    SECRET_UUID=$({ "${VIRSH[@]}" secret-list 2>/dev/null || true; } | awk -v u="$USAGE" 'index($0, "ceph " u) && !found {print $1; found=1}')
  fi
  [ -n "$SECRET_UUID" ] || SECRET_UUID=$(cat /proc/sys/kernel/random/uuid)
  tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT
  cat >"$tmp/secret.xml" <<EOF
<secret ephemeral='no' private='yes'>
  <uuid>$SECRET_UUID</uuid>
  <usage type='ceph'><name>$USAGE</name></usage>
</secret>
EOF
  say "defining libvirt secret $SECRET_UUID on $LIBVIRT_URI"
  run "${VIRSH[@]}" secret-define "$tmp/secret.xml"
  if [ $DRY = 1 ]; then
    run "${CEPH[@]}" auth get-key "client.$QEMU_USER" -o KEYFILE
    run "${VIRSH[@]}" secret-set-value --secret "$SECRET_UUID" --file KEYFILE
  else
    (umask 077; "${CEPH[@]}" auth get-key "client.$QEMU_USER" >"$tmp/key")
    "${VIRSH[@]}" secret-set-value --secret "$SECRET_UUID" --file "$tmp/key" >/dev/null
  fi
fi

# 6. config snippet
mons=$({ "${CEPH[@]}" mon dump 2>/dev/null || true; } | sed -n 's/.*v1:\([^/]*\)\/0.*/\1/p' | paste -sd, - | sed 's/,/", "/g')
cat <<EOF
# api-web config.toml: the [ceph] section for this cluster
[ceph]
conf = "$CONF"
user = "$API_USER"
keyring = "$KEYDIR/ceph.client.$API_USER.keyring"
images_pool = "$IMAGES"
volumes_pool = "$VOLUMES"
mon_hosts = ["$mons"]
qemu_user = "$QEMU_USER"
secret_uuid = "${SECRET_UUID:-<run with the secret step on each hypervisor>}"
op_timeout_secs = 30
EOF
