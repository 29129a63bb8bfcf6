#!/usr/bin/env bash
# Builds a tiny raw disk image that boots by BIOS, for trying and testing api-web instances:
# MBR + one active FAT16 partition + SYSLINUX + Debian's cloud kernel + a busybox initramfs.
# No loop devices, no mounts, no root needed (packages: syslinux, syslinux-common, mtools,
# dosfstools, cpio, busybox-static, linux-image-cloud-amd64; dev-stack.sh installs them).
#
# The guest's /init prints to the serial console:
#   API-WEB-GUEST-BOOTED                  once the kernel and virtio drivers are up
# then, from the NoCloud config drive (an IDE CD-ROM labelled cidata) api-web attaches:
#   CIDATA <dev> label=cidata             found by its label and mounted (CIDATA none: no drive)
#   HOSTNAME <name>                       meta-data's local-hostname, now the guest's hostname
#   SSH-KEYS <n>                          how many keys meta-data's public-keys holds
#   USER-DATA sha256=<hex>                the SHA-256 of user-data
#   NET <if> ip=<addr>/<prefix>           network-config applied: the interface with that MAC
#                                         is up with that address (NET <if> dhcp: it asks for
#                                         DHCP, which this image does not run)
#   ROUTE default via <gw> dev <if>       network-config's default route, applied
# and then:
#   DISK <dev> serial=<serial> size=<512-byte sectors>   one line per virtio disk
#   NIC <if> mac=<mac>                    one line per network interface
#   API-WEB-GUEST-REPORT <n>              after each report; a new report follows any change
#                                         (hot-plugged or removed disks and NICs)
# and powers off when the ACPI power button is pressed (a graceful `virsh shutdown`).
#
#   scripts/build-test-image.sh [OUTPUT_DIR]     (default: .dev-stack/test-image)
# The image's path is the last line printed.
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
OUT=${1:-${API_WEB_STACK_DIR:-$REPO/.dev-stack}/test-image}
KERNEL=$(ls /boot/vmlinuz-*-cloud-amd64 2>/dev/null | sort -V | tail -1)
[ -n "$KERNEL" ] || { echo "no /boot/vmlinuz-*-cloud-amd64: apt-get install linux-image-cloud-amd64" >&2; exit 1; }
KVER=${KERNEL#/boot/vmlinuz-}
MODS="virtio_ring virtio virtio_pci_modern_dev virtio_pci_legacy_dev virtio_pci virtio_blk failover net_failover virtio_net button evdev scsi_common scsi_mod libata ata_piix cdrom sr_mod isofs"
for c in busybox mkfs.vfat mcopy syslinux cpio; do
  command -v $c >/dev/null || { echo "missing $c: run scripts/dev-stack.sh up (it installs it)" >&2; exit 1; }
done

W=$(mktemp -d); trap 'rm -rf "$W"' EXIT
mkdir -p "$OUT" "$W/root/bin" "$W/root/lib/modules" "$W/root/proc" "$W/root/sys" "$W/root/dev"
cp "$(command -v busybox)" "$W/root/bin/busybox"
for m in $MODS; do
  f=$(find "/lib/modules/$KVER" -name "$m.ko" -o -name "$m.ko.xz" | head -1)
  [ -n "$f" ] || { echo "module $m not found for $KVER" >&2; exit 1; }
  case "$f" in *.xz) xz -dc "$f" >"$W/root/lib/modules/$m.ko" ;; *) cp "$f" "$W/root/lib/modules/$m.ko" ;; esac
done
cat >"$W/root/init" <<'EOF'
#!/bin/busybox sh
/bin/busybox --install -s /bin
export PATH=/bin
mount -t proc proc /proc; mount -t sysfs sys /sys; mount -t devtmpfs dev /dev
for m in virtio_ring virtio virtio_pci_modern_dev virtio_pci_legacy_dev virtio_pci virtio_blk failover net_failover virtio_net button evdev scsi_common scsi_mod libata ata_piix cdrom sr_mod isofs; do
  insmod /lib/modules/$m.ko 2>/dev/null
done
echo "API-WEB-GUEST-BOOTED" >/dev/ttyS0
# The NoCloud config drive (label cidata, an IDE CD-ROM): apply its network-config, report it.
# The JSON is api-web's pretty-printed form (one value per line), which is what the awk reads.
cidata() {
  # The ISO 9660 volume identifier: 32 bytes at offset 40 of sector 16 (busybox's findfs
  # does not read ISO 9660 labels).
  label() { dd if="$1" bs=1 skip=32808 count=32 2>/dev/null | tr -d ' '; }
  d=""
  for i in $(seq 1 30); do
    for c in /dev/sr*; do [ -b "$c" ] && [ "$(label "$c")" = cidata ] && d=$c; done
    [ -n "$d" ] && break; sleep 0.1
  done
  mkdir -p /mnt
  [ -n "$d" ] && mount -t iso9660 -o ro "$d" /mnt 2>/dev/null || { echo "CIDATA none"; return; }
  echo "CIDATA $d label=cidata"
  h=$(sed -n 's/^ *"local-hostname": "\(.*\)",\{0,1\}$/\1/p' /mnt/meta-data)
  [ -n "$h" ] && hostname "$h" && echo "HOSTNAME $(hostname)"
  echo "SSH-KEYS $(awk '/"public-keys": \[$/ {k=1; next} k && /^ *\]/ {k=0} k {n++} END {print n+0}' /mnt/meta-data)"
  echo "USER-DATA sha256=$(sha256sum /mnt/user-data | cut -d' ' -f1)"
  # One "mac ip/prefix gateway dhcp" line per ethernet ("-" where absent).
  awk '
    function flush() { if (mac != "") print mac, (ip == "" ? "-" : ip), (gw == "" ? "-" : gw), dhcp; mac = ip = gw = ""; dhcp = "-" }
    BEGIN { dhcp = "-" }
    /^    "[^"]*": \{$/ { flush() }
    /"macaddress":/ { split($0, a, "\""); mac = a[4] }
    /^ *"[0-9.]+\/[0-9]+",?$/ { if (ip == "") { split($0, a, "\""); ip = a[2] } }
    /"via":/ { split($0, a, "\""); gw = a[4] }
    /"dhcp4": true/ { dhcp = "dhcp" }
    END { flush() }
  ' /mnt/network-config | while read mac ip gw dhcp; do
    dev=""
    for n in /sys/class/net/*; do [ "$(cat "$n/address")" = "$mac" ] && dev=$(basename "$n"); done
    [ -n "$dev" ] || { echo "NET - mac=$mac not found"; continue; }
    ip link set "$dev" up
    if [ "$ip" != - ]; then
      ip addr add "$ip" dev "$dev" && echo "NET $dev ip=$ip"
      [ "$gw" != - ] && ip route add default via "$gw" dev "$dev" && echo "ROUTE default via $gw dev $dev"
    elif [ "$dhcp" = dhcp ]; then
      echo "NET $dev dhcp"
    fi
  done
  umount /mnt
}
cidata >/dev/ttyS0 2>&1
# Power button -> poweroff (what a graceful ACPI shutdown needs).
for e in /sys/class/input/event*; do
  if grep -q "Power Button" "$e/device/name" 2>/dev/null; then
    (head -c 1 "/dev/input/$(basename "$e")" >/dev/null; echo "API-WEB-GUEST-POWEROFF" >/dev/ttyS0; poweroff -f) &
  fi
done
state() {
  for b in /sys/block/vd*; do
    [ -e "$b" ] && echo "DISK $(basename "$b") serial=$(cat "$b/serial" 2>/dev/null) size=$(cat "$b/size")"
  done
  for n in /sys/class/net/*; do
    [ "$(basename "$n")" = lo ] || echo "NIC $(basename "$n") mac=$(cat "$n/address")"
  done
}
n=0; last=""
while true; do
  now=$(state)
  if [ "$now" != "$last" ]; then
    n=$((n + 1)); { [ -n "$now" ] && echo "$now"; echo "API-WEB-GUEST-REPORT $n"; } >/dev/ttyS0
    last=$now
  fi
  sleep 0.3
done
EOF
chmod 0755 "$W/root/init"
# Fixed timestamps and ownership: the same inputs give the same bytes.
find "$W/root" -exec touch -h -d @0 {} +
(cd "$W/root" && find . | LC_ALL=C sort | cpio --quiet -o -H newc -R 0:0 --reproducible | gzip -n -9 >"$W/initrd.gz")

cat >"$W/syslinux.cfg" <<EOF
SERIAL 0 115200
PROMPT 0
TIMEOUT 0
DEFAULT linux
LABEL linux
  KERNEL /vmlinuz
  INITRD /initrd.gz
  APPEND console=ttyS0 panic=-1 quiet
EOF
cp "$KERNEL" "$W/vmlinuz"

# The FAT16 partition as a file: 31 MiB starting at sector 2048 (hidden sectors = its offset).
PART_SECTORS=$((31 * 2048))
truncate -s $((PART_SECTORS * 512)) "$W/part.fat"
mkfs.vfat -F 16 -h 2048 -i 41504957 -n APIWEBTEST "$W/part.fat" >/dev/null
export MTOOLS_SKIP_CHECK=1 SOURCE_DATE_EPOCH=0
mcopy -m -i "$W/part.fat" "$W/vmlinuz" "$W/initrd.gz" "$W/syslinux.cfg" ::/
syslinux --install "$W/part.fat"

IMG="$OUT/api-web-test.raw"
rm -f "$IMG"
truncate -s 32M "$IMG"
dd if=/usr/lib/syslinux/mbr/mbr.bin of="$IMG" bs=440 count=1 conv=notrunc status=none
# One partition entry: active (0x80), CHS fields unused (0xfe 0xff 0xff), type 0x06 (FAT16),
# LBA start 2048, length PART_SECTORS (little endian); then the 0x55AA signature.
le32() { printf '\\x%02x\\x%02x\\x%02x\\x%02x' $(($1 & 255)) $((($1 >> 8) & 255)) $((($1 >> 16) & 255)) $((($1 >> 24) & 255)); }
printf "\\x80\\xfe\\xff\\xff\\x06\\xfe\\xff\\xff$(le32 2048)$(le32 $PART_SECTORS)" | dd of="$IMG" bs=1 seek=446 conv=notrunc status=none
printf '\x55\xaa' | dd of="$IMG" bs=1 seek=510 conv=notrunc status=none
dd if="$W/part.fat" of="$IMG" bs=1M seek=1 conv=notrunc,sparse status=none
chmod 0644 "$IMG"
echo "$IMG"
