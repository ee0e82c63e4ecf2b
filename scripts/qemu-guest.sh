# Sourced by test-env.sh: builds the QEMU test guest.
#
# build_qemu_guest DIR writes into DIR:
# - vmlinuz: the kernel of Debian's cloud kernel package (downloaded, never
#   installed);
# - initrd.gz: a busybox initramfs whose /init loads the virtio network,
#   ACPI button and evdev modules, configures eth0 for QEMU's user network
#   (10.0.2.15/24 via 10.0.2.2), serves a page with `busybox httpd` on port
#   8080, prints `mcp-test-guest: up` on the serial console, and powers off
#   (printing `mcp-test-guest: power button, powering off`) when the ACPI
#   power button is pressed (QMP `system_powerdown`);
# - disk.raw: a one-sector raw disk whose boot sector writes
#   `mcp-test-disk: up` to the first serial port and halts. It proves that the
#   disk boot path works end to end (the BIOS boots the disk QEMU was given);
#   having no operating system, it ignores the power button.
# Rebuilt only when missing or when this script changed.

build_qemu_guest() {
    local dir=$1
    local stamp_want
    stamp_want=$(sha256sum "${BASH_SOURCE[0]}" | cut -c1-16)
    if [ -f "$dir/vmlinuz" ] && [ -f "$dir/initrd.gz" ] && [ -f "$dir/disk.raw" ] \
        && [ "$(cat "$dir/stamp" 2>/dev/null)" = "$stamp_want" ]; then
        return
    fi
    mkdir -p "$dir"
    local work
    work=$(mktemp -d)
    # The exact package behind the cloud kernel metapackage, such as
    # linux-image-6.1.0-56-cloud-amd64.
    local pkg
    pkg=$(apt-cache depends linux-image-cloud-amd64 2>/dev/null \
        | awk '/Depends: linux-image-[0-9]/ { print $2; exit }')
    if [ -z "$pkg" ]; then
        apt-get update -qq
        pkg=$(apt-cache depends linux-image-cloud-amd64 \
            | awk '/Depends: linux-image-[0-9]/ { print $2; exit }')
    fi
    [ -n "$pkg" ] || { echo "test-env: cannot resolve linux-image-cloud-amd64" >&2; return 1; }
    (cd "$work" && apt-get download -q "$pkg" 2>/dev/null >/dev/null) \
        || { echo "test-env: apt-get download $pkg failed" >&2; return 1; }
    dpkg -x "$work"/"$pkg"_*.deb "$work/kernel"
    local kver=${pkg#linux-image-}
    local mods=$work/kernel/lib/modules/$kver/kernel
    cp "$work/kernel/boot/vmlinuz-$kver" "$dir/vmlinuz.new"

    local rootfs=$work/rootfs
    mkdir -p "$rootfs"/{bin,proc,sys,dev,www,lib/modules,tmp}
    cp /bin/busybox "$rootfs/bin/busybox"
    # Load order matters: each module after those it needs.
    local m
    for m in virtio/virtio virtio/virtio_ring virtio/virtio_pci_modern_dev \
        virtio/virtio_pci_legacy_dev virtio/virtio_pci; do
        cp "$mods/drivers/$m.ko" "$rootfs/lib/modules/"
    done
    cp "$mods/net/core/failover.ko" "$mods/drivers/net/net_failover.ko" \
        "$mods/drivers/net/virtio_net.ko" "$mods/drivers/block/virtio_blk.ko" \
        "$mods/drivers/acpi/button.ko" "$mods/drivers/input/evdev.ko" \
        "$rootfs/lib/modules/"
    echo "hello from the mcp test guest" >"$rootfs/www/index.html"
    cat >"$rootfs/init" <<'INIT'
#!/bin/busybox sh
/bin/busybox --install -s /bin
export PATH=/bin
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev
for m in virtio_ring virtio virtio_pci_modern_dev virtio_pci_legacy_dev virtio_pci \
    failover net_failover virtio_net virtio_blk button evdev; do
    insmod /lib/modules/$m.ko || echo "mcp-test-guest: insmod $m failed"
done
ifconfig lo 127.0.0.1 up
for _ in 1 2 3 4 5 6 7 8 9 10; do [ -e /sys/class/net/eth0 ] && break; sleep 0.2; done
ifconfig eth0 10.0.2.15 netmask 255.255.255.0 up
route add default gw 10.0.2.2
httpd -p 8080 -h /www
button=
for _ in 1 2 3 4 5 6 7 8 9 10; do
    for ev in /sys/class/input/event*; do
        [ "$(cat "$ev/device/name" 2>/dev/null)" = "Power Button" ] && button=/dev/input/${ev##*/}
    done
    [ -n "$button" ] && [ -e "$button" ] && break
    sleep 0.2
done
echo "mcp-test-guest: up"
if [ -n "$button" ]; then
    # Blocks until the first input event: the button is pressed.
    dd if="$button" of=/dev/null bs=24 count=1 2>/dev/null
    echo "mcp-test-guest: power button, powering off"
else
    echo "mcp-test-guest: no power button device"
    while :; do sleep 3600; done
fi
poweroff -f
INIT
    chmod +x "$rootfs/init"
    (cd "$rootfs" && find . | cpio -o -H newc --quiet | gzip -9) >"$dir/initrd.gz.new"

    # The boot sector: xor ax,ax; mov ds,ax; cld; mov si,msg; mov dx,0x3f8;
    # next: lodsb; test al,al; jz done; out dx,al; jmp next;
    # done: cli; hlt; jmp done (hlt); msg at offset 0x17.
    {
        printf '\x31\xc0\x8e\xd8\xfc\xbe\x17\x7c\xba\xf8\x03\xac\x84\xc0\x74\x03\xee\xeb\xf8\xfa\xf4\xeb\xfd'
        printf 'mcp-test-disk: up\r\n\0'
    } >"$work/sector"
    truncate -s 510 "$work/sector"
    printf '\x55\xaa' >>"$work/sector"
    # A raw disk of 1 MiB, boot sector first.
    cp "$work/sector" "$dir/disk.raw.new"
    truncate -s 1M "$dir/disk.raw.new"

    mv "$dir/vmlinuz.new" "$dir/vmlinuz"
    mv "$dir/initrd.gz.new" "$dir/initrd.gz"
    mv "$dir/disk.raw.new" "$dir/disk.raw"
    echo "$stamp_want" >"$dir/stamp"
    rm -rf "$work"
    echo "test-env: built the QEMU test guest in $dir ($pkg)"
}
