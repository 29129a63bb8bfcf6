#!/usr/bin/env bash
# The local development and test stack of api-web, as the project's own child processes:
#   a private MariaDB, virtlogd + virtlockd + libvirtd (qemu:///system), a single-node Ceph
#   (mon + one bluestore OSD on a sparse file, cephx), the pools, the cephx users, the libvirt
#   secret for QEMU, and a Linux bridge for guests' NICs.
#
#   scripts/dev-stack.sh up       install what is missing, start everything (idempotent)
#   scripts/dev-stack.sh up --hosts N
#                                 also N-1 more libvirt hosts on this machine, each its own
#                                 libvirtd (own state, sockets, host UUID, TCP and migration
#                                 ports, the same Ceph secret); `env` lists their URIs in
#                                 API_WEB_EXTRA_HOST_URIS. Extra hosts beyond N are stopped;
#                                 `up` without --hosts leaves them as they are.
#   scripts/dev-stack.sh down     stop only what this script started
#   scripts/dev-stack.sh status   say what runs
#   scripts/dev-stack.sh env      print export lines: eval "$(scripts/dev-stack.sh env)"
#   scripts/dev-stack.sh kill D   SIGKILL one daemon this script started (mariadb, libvirtd,
#                                 ceph-mon, ceph-osd, or host<i>: an extra host's libvirtd), by
#                                 its pid file: the outage tests' crash; `up` (for a host,
#                                 `up --hosts N`) starts it again
#
# Data lives in $API_WEB_STACK_DIR (default: <repo>/.dev-stack, git-ignored). Ports are not the
# defaults, so the stack can share a machine with other MariaDB or Ceph instances.
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
STACK=${API_WEB_STACK_DIR:-$REPO/.dev-stack}
MYSQL_PORT=${API_WEB_MYSQL_PORT:-23306}
MON_V2_PORT=${API_WEB_CEPH_MON_V2_PORT:-13300}
MON_V1_PORT=${API_WEB_CEPH_MON_V1_PORT:-16789}
CEPH_PORT_MIN=${API_WEB_CEPH_PORT_MIN:-16800}
CEPH_PORT_MAX=${API_WEB_CEPH_PORT_MAX:-16899}
BRIDGE=${API_WEB_BRIDGE:-apiwebbr0}
IMAGES_POOL=images
VOLUMES_POOL=volumes
# Fixed so that config.toml's default works; only this stack defines a secret with this UUID.
SECRET_UUID=${API_WEB_CEPH_SECRET_UUID:-8d3b6f2a-51c4-4e0b-9c1f-a9e0c0de0a01}
# Extra libvirt host i (2, 3, ...) listens on 127.0.0.1:HOST_PORT_BASE+i and migrates on
# MIGRATION_PORT_BASE+100*i .. +99.
HOST_PORT_BASE=${API_WEB_HOST_PORT_BASE:-26500}
MIGRATION_PORT_BASE=${API_WEB_MIGRATION_PORT_BASE:-27000}
DB_USER=api_web
DB_PASS=api_web
QEMU_PIN=1:7.2+dfsg-7+deb12u18+b3

MY=$STACK/mysql
CEPH=$STACK/ceph
CONF=$CEPH/ceph.conf
MARK=$STACK/started

log() { printf '[dev-stack] %s\n' "$*" >&2; }
die() { printf '[dev-stack] ERROR: %s\n' "$*" >&2; exit 1; }

alive() { [ -f "$1" ] && kill -0 "$(cat "$1")" 2>/dev/null; }

wait_for() { # wait_for <seconds> <description> <command...>
  local secs=$1 what=$2; shift 2
  local end=$((SECONDS + secs))
  until "$@" >/dev/null 2>&1; do
    [ $SECONDS -lt $end ] || die "$what did not come up within ${secs}s"
    sleep 0.2
  done
}

# ---------------------------------------------------------------- packages
need_packages() {
  local missing=0
  for c in mariadbd mariadb-install-db libvirtd virtlogd virsh qemu-system-x86_64 ceph ceph-mon ceph-osd \
           ceph-authtool monmaptool rbd qemu-img ip busybox mcopy mkfs.vfat syslinux cpio pkg-config curl tini genisoimage \
           chromium; do
    command -v "$c" >/dev/null 2>&1 || PATH=$PATH:/usr/sbin:/sbin command -v "$c" >/dev/null 2>&1 || { log "missing: $c"; missing=1; }
  done
  for f in /usr/include/rbd/librbd.h /usr/include/rados/librados.h /usr/lib/syslinux/mbr/mbr.bin; do
    [ -e "$f" ] || { log "missing: $f"; missing=1; }
  done
  pkg-config --exists libvirt 2>/dev/null || { log "missing: libvirt-dev"; missing=1; }
  [ -e /usr/lib/x86_64-linux-gnu/libmariadb.so ] || [ -e /usr/lib/x86_64-linux-gnu/libmysqlclient.so ] || { log "missing: libmariadb-dev-compat"; missing=1; }
  ls /boot/vmlinuz-*-cloud-amd64 >/dev/null 2>&1 || { log "missing: linux-image-cloud-amd64"; missing=1; }
  [ -e /usr/lib/x86_64-linux-gnu/qemu/block-rbd.so ] || { log "missing: qemu-block-extra"; missing=1; }
  return $missing
}

install_packages() {
  need_packages && return 0
  log "installing packages (apt; qemu pinned to $QEMU_PIN)"
  [ "$(id -u)" = 0 ] || die "package installation needs root"
  apt-get update -q >&2
  # The machine image ships qemu-utils 10 from backports, which blocks qemu-system 7.2: pin all three.
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q --allow-downgrades \
    "qemu-system-x86=$QEMU_PIN" "qemu-block-extra=$QEMU_PIN" "qemu-utils=$QEMU_PIN" \
    libvirt-daemon-system libvirt-clients libvirt-dev \
    mariadb-server libmariadb-dev-compat bridge-utils iproute2 \
    ceph ceph-mon ceph-osd ceph-common librbd-dev librados-dev \
    busybox-static linux-image-cloud-amd64 syslinux syslinux-common mtools dosfstools cpio pkg-config curl \
    tini chromium genisoimage >&2
  need_packages || die "packages still missing after apt-get install"
}

# ---------------------------------------------------------------- MariaDB
mysql_up() {
  mkdir -p "$MY"
  if alive "$MY/mysqld.pid"; then log "mariadb already running on 127.0.0.1:$MYSQL_PORT"; else
    if [ ! -d "$MY/data/mysql" ]; then
      log "initialising mariadb data in $MY/data"
      mariadb-install-db --no-defaults --datadir="$MY/data" --user=root \
        --auth-root-authentication-method=socket --skip-test-db >"$MY/install.log" 2>&1 \
        || die "mariadb-install-db failed: see $MY/install.log"
    fi
    log "starting mariadb on 127.0.0.1:$MYSQL_PORT"
    setsid mariadbd --no-defaults --datadir="$MY/data" --socket="$MY/mysqld.sock" --pid-file="$MY/mysqld.pid" \
      --port="$MYSQL_PORT" --bind-address=127.0.0.1 --user=root --skip-name-resolve \
      --innodb-buffer-pool-size=128M --max-connections=500 --log-error="$MY/error.log" \
      </dev/null >/dev/null 2>&1 &
    wait_for 60 "mariadb" mariadb --no-defaults --socket="$MY/mysqld.sock" -uroot -e 'SELECT 1'
  fi
  mariadb --no-defaults --socket="$MY/mysqld.sock" -uroot <<SQL
CREATE USER IF NOT EXISTS '$DB_USER'@'127.0.0.1' IDENTIFIED BY '$DB_PASS';
CREATE USER IF NOT EXISTS '$DB_USER'@'localhost' IDENTIFIED BY '$DB_PASS';
-- global privileges: the tests create and drop one database each
GRANT ALL PRIVILEGES ON *.* TO '$DB_USER'@'127.0.0.1';
GRANT ALL PRIVILEGES ON *.* TO '$DB_USER'@'localhost';
CREATE DATABASE IF NOT EXISTS api_web CHARACTER SET utf8mb4 COLLATE utf8mb4_unicode_ci;
SQL
  # Option file for the mariadb client, found through MYSQL_HOME (see `env`).
  cat >"$MY/my.cnf" <<EOF
[client]
host=127.0.0.1
port=$MYSQL_PORT
user=$DB_USER
password=$DB_PASS
[mariadb-client]
database=api_web
EOF
}

mysql_down() {
  if alive "$MY/mysqld.pid"; then
    log "stopping mariadb"
    local pid; pid=$(cat "$MY/mysqld.pid"); kill "$pid"
    for _ in $(seq 1 150); do kill -0 "$pid" 2>/dev/null || break; sleep 0.2; done
  fi
}

# ---------------------------------------------------------------- libvirt
virsh_ok() { virsh -c qemu:///system version >/dev/null 2>&1; }

libvirt_up() {
  mkdir -p "$STACK"
  if virsh_ok; then log "libvirtd already answers on qemu:///system"; return 0; fi
  log "starting virtlogd, virtlockd, libvirtd"
  pgrep -x virtlogd >/dev/null || { virtlogd -d && touch "$MARK.virtlogd"; }
  pgrep -x virtlockd >/dev/null || { virtlockd -d && touch "$MARK.virtlockd"; }
  if ! pgrep -x libvirtd >/dev/null; then
    # libvirtd in the foreground under a child subreaper (tini -s): the QEMUs it double-forks
    # are reaped at once, instead of each exit waiting ~1.8 s for this machine's PID 1.
    setsid tini -s -- libvirtd </dev/null >"$STACK/libvirtd.log" 2>&1 &
    echo $! >"$STACK/libvirtd.reaper.pid"
    touch "$MARK.libvirtd"
  fi
  wait_for 90 "libvirtd" virsh_ok
  # libvirt's own 'default' network would start dnsmasq on a private range: never autostart it.
  virsh -c qemu:///system net-autostart default --disable >/dev/null 2>&1 || true
}

libvirt_down() {
  if alive "$STACK/libvirtd.reaper.pid"; then
    # tini passes SIGTERM on to libvirtd and exits with it.
    log "stopping libvirtd"
    local pid; pid=$(cat "$STACK/libvirtd.reaper.pid"); kill "$pid"
    for _ in $(seq 1 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    rm -f "$MARK.libvirtd" "$STACK/libvirtd.reaper.pid"
  fi
  for d in libvirtd virtlockd virtlogd; do
    if [ -f "$MARK.$d" ]; then
      log "stopping $d"
      pkill -TERM -x "$d" || true
      for _ in $(seq 1 100); do pgrep -x "$d" >/dev/null || break; sleep 0.1; done
      rm -f "$MARK.$d"
    fi
  done
}

# ---------------------------------------------------------------- extra libvirt hosts
# Each is a libvirtd in a private mount namespace whose /etc/libvirt, /run/libvirt,
# /var/lib/libvirt, /var/log/libvirt and /var/cache/libvirt are its own directories (see
# ../shared/infra-recipes.md, several hosts). The binary is a copy named libvirtd-h, so that
# `pgrep -x libvirtd` (and libvirt_down) never match an extra host.
HOSTS=$STACK/hosts

host_dir() { echo "$HOSTS/h$1"; }
host_uri() { echo "qemu+tcp://127.0.0.1:$((HOST_PORT_BASE + $1))/system"; }
host_ok() { virsh -c "$(host_uri "$1")" version >/dev/null 2>&1; }

host_up() { # host_up <i>
  local i=$1 d port mig
  d=$(host_dir "$i"); port=$((HOST_PORT_BASE + i)); mig=$((MIGRATION_PORT_BASE + 100 * i))
  [ -n "$d" ] && [ "$d" != / ] || die "no directory for host $i"
  if alive "$d/reaper.pid" && host_ok "$i"; then log "host $i already answers on $(host_uri "$i")"; return 0; fi
  log "starting libvirt host $i ($(host_uri "$i"))"
  mkdir -p "$d/etc/qemu" "$d/etc/secrets" "$d/run" "$d/lib" "$d/log" "$d/cache/qemu/capabilities"
  [ -f "$d/uuid" ] || cat /proc/sys/kernel/random/uuid >"$d/uuid"
  cat >"$d/etc/libvirtd.conf" <<EOF
listen_tls = 0
listen_tcp = 1
tcp_port = "$port"
listen_addr = "127.0.0.1"
# Throw-away test hosts on loopback only: no authentication.
auth_tcp = "none"
auth_unix_rw = "none"
host_uuid = "$(cat "$d/uuid")"
log_outputs = "3:file:/var/log/libvirt/libvirtd.log"
EOF
  cat >"$d/etc/qemu.conf" <<EOF
user = "root"
group = "root"
dynamic_ownership = 0
security_driver = "none"
cgroup_controllers = [ ]
stdio_handler = "file"
migration_port_min = $mig
migration_port_max = $((mig + 99))
EOF
  # QEMU's capabilities, probed once by the main host: the extra host starts in 0.2 s.
  cp -n /var/cache/libvirt/qemu/capabilities/*.xml "$d/cache/qemu/capabilities/" 2>/dev/null || true
  [ -x "$HOSTS/libvirtd-h" ] || cp "$(command -v libvirtd)" "$HOSTS/libvirtd-h"
  setsid unshare -m --propagation private -- sh -ec "
    mount -n --bind '$d/etc' /etc/libvirt
    mount -n --bind '$d/run' /run/libvirt
    mount -n --bind '$d/lib' /var/lib/libvirt
    mount -n --bind '$d/log' /var/log/libvirt
    mount -n --bind '$d/cache' /var/cache/libvirt
    exec tini -s -- '$HOSTS/libvirtd-h' --listen -p '$d/libvirtd.pid' -f /etc/libvirt/libvirtd.conf" \
    </dev/null >"$d/libvirtd.out" 2>&1 &
  echo $! >"$d/reaper.pid"
  wait_for 90 "libvirt host $i" host_ok "$i"
  # The same libvirt secret as the main host: RBD disks open (and migrate) on every host.
  host_secret "$i"
}

host_secret() {
  local uri xml=$STACK/secret.xml key=$STACK/libvirt.key
  uri=$(host_uri "$1")
  virsh -c "$uri" secret-define "$xml" >/dev/null
  cephc auth get-key client.libvirt >"$key"
  chmod 0600 "$key"
  virsh -c "$uri" secret-set-value --secret "$SECRET_UUID" --file "$key" >/dev/null
  rm -f "$key"
}

host_down() { # host_down <i>: its guests destroyed, then its libvirtd stopped
  local i=$1 d pid uri dom
  d=$(host_dir "$i"); uri=$(host_uri "$i")
  alive "$d/reaper.pid" || { rm -f "$d/reaper.pid"; return 0; }
  log "stopping libvirt host $i"
  for dom in $(virsh -c "$uri" list --name 2>/dev/null); do virsh -c "$uri" destroy "$dom" >/dev/null 2>&1 || true; done
  # tini passes SIGTERM on to its libvirtd and exits with it.
  pid=$(cat "$d/reaper.pid"); kill "$pid" 2>/dev/null || true
  for _ in $(seq 1 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
  rm -f "$d/reaper.pid"
}

# hosts_up <N>: hosts 2..N up, any started beyond N down.
hosts_up() {
  local n=$1 i d
  case "$n" in ''|*[!0-9]*) die "--hosts wants a number (1 or more)" ;; esac
  [ "$n" -ge 1 ] || die "--hosts wants a number (1 or more)"
  mkdir -p "$HOSTS"
  for i in $(seq 2 "$n"); do host_up "$i"; done
  for d in "$HOSTS"/h*; do
    [ -d "$d" ] || continue
    i=${d##*/h}
    [ "$i" -le "$n" ] || host_down "$i"
  done
}

hosts_down() {
  local d
  for d in "$HOSTS"/h*; do [ -d "$d" ] && host_down "${d##*/h}"; done
  return 0
}

# The URIs of the extra hosts that run, in order.
extra_uris() {
  local d i out=""
  for d in "$HOSTS"/h*; do
    [ -d "$d" ] || continue
    i=${d##*/h}
    alive "$d/reaper.pid" && out="$out $(host_uri "$i")"
  done
  echo "${out# }"
}

# ---------------------------------------------------------------- Ceph
cephc() { ceph --conf "$CONF" --connect-timeout 10 "$@"; }

ceph_conf() {
  mkdir -p "$CEPH/run" "$CEPH/log"
  # Written aside and renamed: a running api-web or QEMU may read it at any moment.
  cat >"$CONF.new" <<EOF
[global]
fsid = $(cat "$CEPH/fsid")
mon initial members = a
mon host = [v2:127.0.0.1:$MON_V2_PORT,v1:127.0.0.1:$MON_V1_PORT]
public addr = 127.0.0.1
cluster addr = 127.0.0.1
ms bind port min = $CEPH_PORT_MIN
ms bind port max = $CEPH_PORT_MAX
auth cluster required = cephx
auth service required = cephx
auth client required = cephx
keyring = $CEPH/ceph.\$name.keyring
run dir = $CEPH/run
pid file = $CEPH/run/\$name.pid
admin socket = $CEPH/run/\$name.asok
log file = $CEPH/log/\$name.log
osd pool default size = 1
osd pool default min size = 1
osd pool default pg autoscale mode = off
mon allow pool size one = true
mon allow pool delete = true
mon warn on pool no redundancy = false
osd crush chooseleaf type = 0
rbd default features = 61
# An RBD snapshot waits for the monitors to commit its snapshot id; by default they commit at
# most once a second, so back-to-back snapshots wait ~1 s each. Measured, an instance snapshot's
# guest suspended p50: 943 ms at the defaults, 115 ms with the interval at 0.05, 70 ms with
# 0.02 and a 10 ms minimum wait. A one-mon cluster commits cheaply. (The option has no "mon"
# prefix: "mon paxos propose interval" is silently ignored.)
paxos propose interval = 0.02
paxos min wait = 0.01

[client]
# Many CLI and library clients run at once: a shared admin socket path would collide.
admin socket =
log file = $CEPH/log/client.log

[mon]
mon data = $CEPH/mon.\$id
keyring = $CEPH/mon.\$id/keyring

[osd]
osd data = $CEPH/osd.\$id
keyring = $CEPH/osd.\$id/keyring
osd objectstore = bluestore
bluestore block path = $CEPH/osd.\$id.block
bluestore block create = true
bluestore block size = 64424509440
bluestore block db create = false
bluestore block wal create = false
osd memory target = 939524096
bluestore cache autotune = false
bluestore cache size = 134217728
osd max object name len = 256
osd max object namespace len = 64
EOF
  mv -f "$CONF.new" "$CONF"
}

ceph_init() {
  log "creating a single-node ceph cluster in $CEPH"
  rm -rf "$CEPH"; mkdir -p "$CEPH"
  cat /proc/sys/kernel/random/uuid >"$CEPH/fsid"
  ceph_conf
  ceph-authtool --create-keyring "$CEPH/mon.keyring" --gen-key -n mon. --cap mon 'allow *' >/dev/null
  ceph-authtool --create-keyring "$CEPH/ceph.client.admin.keyring" --gen-key -n client.admin \
    --cap mon 'allow *' --cap osd 'allow *' --cap mds 'allow *' --cap mgr 'allow *' >/dev/null
  ceph-authtool "$CEPH/mon.keyring" --import-keyring "$CEPH/ceph.client.admin.keyring" >/dev/null
  monmaptool --create --fsid "$(cat "$CEPH/fsid")" \
    --addv a "[v2:127.0.0.1:$MON_V2_PORT,v1:127.0.0.1:$MON_V1_PORT]" "$CEPH/monmap" >/dev/null
  mkdir -p "$CEPH/mon.a"
  ceph-mon --conf "$CONF" -i a --mkfs --monmap "$CEPH/monmap" --keyring "$CEPH/mon.keyring" \
    >"$CEPH/log/mkfs-mon.log" 2>&1 || die "ceph-mon --mkfs failed: see $CEPH/log/mkfs-mon.log"
  cp "$CEPH/mon.keyring" "$CEPH/mon.a/keyring"
  ceph-mon --conf "$CONF" -i a || die "ceph-mon did not start: see $CEPH/log/mon.a.log"
  wait_for 60 "ceph-mon" cephc mon stat
  local osd_uuid; osd_uuid=$(cat /proc/sys/kernel/random/uuid)
  local id; id=$(cephc osd new "$osd_uuid")
  [ "$id" = 0 ] || die "expected osd id 0, got '$id'"
  mkdir -p "$CEPH/osd.0"
  # The key first: mkfs fetches the monitors' config and needs to authenticate for it.
  ceph-authtool --create-keyring "$CEPH/osd.0/keyring" --gen-key -n osd.0 >/dev/null
  cephc auth add osd.0 osd 'allow *' mon 'allow profile osd' mgr 'allow profile osd' \
    -i "$CEPH/osd.0/keyring" >/dev/null
  ceph-osd --conf "$CONF" -i 0 --mkfs --osd-uuid "$osd_uuid" >"$CEPH/log/mkfs-osd.log" 2>&1 \
    || die "ceph-osd --mkfs failed: see $CEPH/log/mkfs-osd.log"
  touch "$CEPH/initialised"
}

osd_up() { cephc osd dump 2>/dev/null | grep -q '^osd\.0 up'; }

ceph_up() {
  if [ ! -f "$CEPH/initialised" ]; then ceph_init; else ceph_conf; fi
  if ! alive "$CEPH/run/mon.a.pid"; then
    log "starting ceph-mon"
    ceph-mon --conf "$CONF" -i a || die "ceph-mon did not start: see $CEPH/log/mon.a.log"
  fi
  wait_for 60 "ceph-mon" cephc mon stat
  if ! alive "$CEPH/run/osd.0.pid"; then
    log "starting ceph-osd"
    ceph-osd --conf "$CONF" -i 0 2>/dev/null || die "ceph-osd did not start: see $CEPH/log/osd.0.log"
  fi
  wait_for 120 "ceph-osd" osd_up
  for pool in "$IMAGES_POOL" "$VOLUMES_POOL"; do
    if ! cephc osd pool ls | grep -qx "$pool"; then
      log "creating pool $pool"
      cephc osd pool create "$pool" 8 8 >/dev/null 2>&1
      rbd --conf "$CEPH/ceph.conf" pool init "$pool"
    fi
  done
  # QEMU's user: read-write on volumes (root disks, data volumes), read-only on images (clone parents).
  # Keyrings are written aside and renamed: a running api-web may read them at any moment.
  cephc auth get-or-create client.libvirt mon 'profile rbd' \
    osd "profile rbd pool=$VOLUMES_POOL, profile rbd-read-only pool=$IMAGES_POOL" \
    -o "$CEPH/ceph.client.libvirt.keyring.new" >/dev/null
  mv -f "$CEPH/ceph.client.libvirt.keyring.new" "$CEPH/ceph.client.libvirt.keyring"
  # The control plane's user: rbd on both pools, nothing else.
  cephc auth get-or-create client.api-web mon 'profile rbd' \
    osd "profile rbd pool=$IMAGES_POOL, profile rbd pool=$VOLUMES_POOL" \
    -o "$CEPH/ceph.client.api-web.keyring.new" >/dev/null
  mv -f "$CEPH/ceph.client.api-web.keyring.new" "$CEPH/ceph.client.api-web.keyring"
  chmod 0644 "$CONF"
}

ceph_down() {
  for d in osd.0 mon.a; do
    local pidf=$CEPH/run/$d.pid
    if alive "$pidf"; then
      log "stopping ceph $d"
      local pid; pid=$(cat "$pidf"); kill "$pid"
      for _ in $(seq 1 150); do kill -0 "$pid" 2>/dev/null || break; sleep 0.2; done
    fi
  done
}

# ---------------------------------------------------------------- libvirt secret for QEMU's cephx key
secret_up() {
  local xml=$STACK/secret.xml key=$STACK/libvirt.key
  cat >"$xml" <<EOF
<secret ephemeral='no' private='yes'>
  <uuid>$SECRET_UUID</uuid>
  <usage type='ceph'><name>api-web-dev client.libvirt secret</name></usage>
</secret>
EOF
  virsh -c qemu:///system secret-define "$xml" >/dev/null
  cephc auth get-key client.libvirt >"$key"
  chmod 0600 "$key"
  virsh -c qemu:///system secret-set-value --secret "$SECRET_UUID" --file "$key" >/dev/null
  rm -f "$key"
}

# ---------------------------------------------------------------- bridge
bridge_up() {
  if ! ip link show "$BRIDGE" >/dev/null 2>&1; then
    log "creating bridge $BRIDGE (no address, no uplink)"
    ip link add name "$BRIDGE" type bridge
    touch "$MARK.bridge"
  fi
  sysctl -qw "net.ipv6.conf.$BRIDGE.disable_ipv6=1" || true
  ip link set "$BRIDGE" up
}

bridge_down() {
  if [ -f "$MARK.bridge" ]; then
    log "removing bridge $BRIDGE"
    ip link del "$BRIDGE" 2>/dev/null || true
    rm -f "$MARK.bridge"
  fi
}

# ---------------------------------------------------------------- commands
print_env() {
  cat <<EOF
export API_WEB_STACK_DIR='$STACK'
export DATABASE_URL='mysql://$DB_USER:$DB_PASS@127.0.0.1:$MYSQL_PORT/api_web'
export API_WEB_TEST_DATABASE_URL='mysql://$DB_USER:$DB_PASS@127.0.0.1:$MYSQL_PORT'
export MYSQL_HOME='$MY'
export CEPH_CONF='$CONF'
export CEPH_IMAGES_POOL='$IMAGES_POOL'
export CEPH_VOLUMES_POOL='$VOLUMES_POOL'
export CEPH_MON_HOSTS='127.0.0.1:$MON_V1_PORT'
export CEPH_SECRET_UUID='$SECRET_UUID'
export LIBVIRT_URI='qemu:///system'
export LIBVIRT_DEFAULT_URI='qemu:///system'
export API_WEB_BRIDGE='$BRIDGE'
export API_WEB_EXTRA_HOST_URIS='$(extra_uris)'
export API_WEB_CONSOLE_LOG_DIR='$STACK/console'
EOF
}

# kill_daemon <name>: SIGKILL, as a crash would, by the pid this script recorded.
kill_daemon() {
  local pidf pid
  case "${1:-}" in
    mariadb) pidf=$MY/mysqld.pid ;;
    ceph-mon) pidf=$CEPH/run/mon.a.pid ;;
    ceph-osd) pidf=$CEPH/run/osd.0.pid ;;
    libvirtd)
      # libvirtd is the child of the tini this script started.
      alive "$STACK/libvirtd.reaper.pid" || die "libvirtd was not started by this script (no live $STACK/libvirtd.reaper.pid)"
      pid=$(pgrep -P "$(cat "$STACK/libvirtd.reaper.pid")" -x libvirtd) || die "no libvirtd under the reaper"
      kill -KILL "$pid"
      for _ in $(seq 1 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.05; done
      log "killed libvirtd ($pid)"
      return 0 ;;
    host[0-9]*)
      # An extra host's libvirtd (up --hosts N); `up --hosts N` starts it again.
      pidf=$STACK/hosts/h${1#host}/libvirtd.pid ;;
    *) die "kill: one of mariadb, libvirtd, ceph-mon, ceph-osd, host<i> (an extra host, i >= 2)" ;;
  esac
  alive "$pidf" || die "$1 is not running (no live $pidf)"
  pid=$(cat "$pidf")
  kill -KILL "$pid"
  for _ in $(seq 1 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.05; done
  log "killed $1 ($pid)"
}

status() {
  local rc=0
  if alive "$MY/mysqld.pid"; then echo "mariadb: running (127.0.0.1:$MYSQL_PORT)"; else echo "mariadb: stopped"; rc=1; fi
  if virsh_ok; then echo "libvirtd: answering (qemu:///system)"; else echo "libvirtd: not answering"; rc=1; fi
  if alive "$CEPH/run/mon.a.pid"; then echo "ceph-mon: running (127.0.0.1:$MON_V1_PORT)"; else echo "ceph-mon: stopped"; rc=1; fi
  if alive "$CEPH/run/osd.0.pid"; then echo "ceph-osd: running"; else echo "ceph-osd: stopped"; rc=1; fi
  if ip link show "$BRIDGE" >/dev/null 2>&1; then echo "bridge $BRIDGE: present"; else echo "bridge $BRIDGE: absent"; rc=1; fi
  local d i
  for d in "$HOSTS"/h*; do
    [ -d "$d" ] || continue
    i=${d##*/h}
    alive "$d/reaper.pid" || continue
    if host_ok "$i"; then echo "libvirt host $i: answering ($(host_uri "$i"))"; else echo "libvirt host $i: not answering"; rc=1; fi
  done
  return $rc
}

NHOSTS=
if [ "${1:-}" = up ] && [ $# -gt 1 ]; then
  case "$2" in
    --hosts) NHOSTS=${3:-} ;;
    --hosts=*) NHOSTS=${2#--hosts=} ;;
    *) die "up: unknown option $2 (up [--hosts N])" ;;
  esac
fi

case "${1:-}" in
  up)
    install_packages
    mkdir -p "$STACK"
    # Serial console logs: one directory every host's QEMU writes and api-web reads (the extra
    # hosts' /var/log/libvirt is their own).
    mkdir -p "$STACK/console"
    mysql_up
    libvirt_up
    ceph_up
    secret_up
    bridge_up
    [ -z "$NHOSTS" ] || hosts_up "$NHOSTS"
    log "stack is up"
    ;;
  down)
    hosts_down
    mysql_down
    ceph_down
    bridge_down
    libvirt_down
    log "stack is down"
    ;;
  status) status ;;
  env) print_env ;;
  kill) kill_daemon "${2:-}" ;;
  *)
    sed -n '2,16p' "$0" | sed 's/^# \{0,1\}//'
    exit 2
    ;;
esac
