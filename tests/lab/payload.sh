#!/bin/sh
# Builds the end-to-end guest payload from Debian packages and prints the
# directory holding it: `vmlinuz` (the kernel of linux-image-cloud-amd64) and
# `initrd.gz` (a busybox-static initramfs whose /init prints
# `PXED-E2E-LOCKDOWN <kernel lockdown modes>` and
# `PXED-E2E-BOOTED cmdline=<…>` on the console and powers off). With
# `pxed.callback=<url>` on its command line it first plays an installer that
# finished: it brings up a virtio NIC (the cloud kernel has no e1000 driver;
# the modules come from the same kernel package), gets an address by DHCP and
# calls the URL with busybox wget, printing `PXED-E2E-CALLBACK <answer>`.
#
# Usage: payload.sh CACHE_ROOT [amd64|arm64]
# arm64 (for the ARM64 GRUB scenario): the kernel of linux-image-cloud-arm64,
# the initramfs with busybox-static:arm64, and Debian's signed shimaa64.efi
# and grubaa64.efi (grubnetaa64.efi.signed) from shim-signed:arm64 and
# grub-efi-arm64-signed:arm64 beside them. Needs the arm64 architecture in
# dpkg and its package lists (`dpkg --add-architecture arm64 && apt-get
# update`, as .ci/run does); nothing is installed.
# The payload is cached in CACHE_ROOT/<kernel package>_<version>-busybox_<version>-r<REV>
# and built once; a lock serialises concurrent callers (tests/common/lab.rs and
# bench/boot.sh both call this). Needs apt-get (the kernel is downloaded, not
# installed), dpkg-deb, busybox (static), gzip and flock. Nothing here is committed.
set -eu

root=${1:?usage: payload.sh CACHE_ROOT [amd64|arm64]}
arch=${2:-amd64}
# Bump when /init or the layout below changes.
REV=3
META=linux-image-cloud-$arch
case $arch in
    amd64) qual= ;;
    # A foreign architecture's packages are named with it.
    arm64) qual=:arm64 ;;
    *) echo "payload: architecture $arch: amd64 or arm64" >&2; exit 1 ;;
esac

# The metapackage depends on the real, versioned image package:
# "Depends: linux-image-6.1.0-56-cloud-amd64 (= 6.1.192-2)". One apt-cache call:
# without a package cache file (Debian container images) each call parses every
# package list, seconds on a busy machine.
dep=$(apt-cache show --no-all-versions "$META$qual" 2>/dev/null | sed -n 's/^Depends: \(linux-image-[^,]*\).*/\1/p' | head -n 1)
pkg=${dep%% *}
kver=$(printf '%s\n' "$dep" | sed -n 's/.*(= \([^)]*\)).*/\1/p')
if [ -z "$pkg" ] || [ -z "$kver" ]; then
    echo "payload: cannot resolve $META$qual with apt-cache (run apt-get update; for arm64 first dpkg --add-architecture arm64)" >&2
    exit 1
fi
busybox=$(command -v busybox) || { echo "payload: busybox (busybox-static) is not installed" >&2; exit 1; }
# ldd fails on a static binary: the initramfs has no libc.
if ! "$busybox" --list | grep -qx cpio || ldd "$busybox" >/dev/null 2>&1; then
    echo "payload: $busybox must be busybox-static (with cpio)" >&2
    exit 1
fi
bbver=$("$busybox" 2>&1 | sed -n '1s/^BusyBox v\([^ ]*\).*/\1/p')
key=$(printf '%s_%s-busybox_%s-r%s' "$pkg" "$kver" "$bbver" "$REV" | tr ':~/ ' '____')
dir=$root/$key

mkdir -p "$root"
exec 9>"$root/.lock"
flock -w 600 9 || { echo "payload: timed out waiting for $root/.lock" >&2; exit 1; }

if [ ! -f "$dir/done" ]; then
    tmp=$(mktemp -d "$root/.build.XXXXXX")
    trap 'rm -rf "$tmp"' EXIT
    (cd "$tmp" && apt-get -q -o APT::Sandbox::User=root download "$pkg$qual=$kver") >&2
    dpkg-deb -x "$tmp"/*.deb "$tmp/pkg"
    mkdir "$tmp/out"
    cp "$tmp"/pkg/boot/vmlinuz-* "$tmp/out/vmlinuz"
    guest_busybox=$busybox
    if [ "$arch" = arm64 ]; then
        mkdir "$tmp/arm64"
        (cd "$tmp/arm64" && apt-get -q -o APT::Sandbox::User=root download \
            busybox-static:arm64 shim-signed:arm64 grub-efi-arm64-signed:arm64) >&2
        for deb in "$tmp"/arm64/*.deb; do dpkg-deb -x "$deb" "$tmp/arm64/root"; done
        guest_busybox=$tmp/arm64/root/bin/busybox
        cp "$tmp/arm64/root/usr/lib/shim/shimaa64.efi.signed" "$tmp/out/shimaa64.efi"
        cp "$tmp/arm64/root/usr/lib/grub/arm64-efi-signed/grubnetaa64.efi.signed" "$tmp/out/grubaa64.efi"
    fi

    ir=$tmp/initramfs
    mkdir -p "$ir/bin" "$ir/dev" "$ir/proc" "$ir/sys"
    cp "$guest_busybox" "$ir/bin/busybox"
    for applet in sh mount cat echo poweroff sleep insmod ip udhcpc wget; do
        ln -s busybox "$ir/bin/$applet"
    done
    # virtio-net and what it needs, in load order (amd64: the installer
    # callback; the ARM64 scenario has none).
    mkdir -p "$ir/lib/modules"
    modules="virtio_ring virtio virtio_pci_modern_dev virtio_pci_legacy_dev virtio_pci failover net_failover virtio_net"
    [ "$arch" = amd64 ] || modules=
    for m in $modules; do
        found=$(find "$tmp/pkg/lib/modules" -name "$m.ko*" | head -n 1)
        [ -n "$found" ] || { echo "payload: no module $m in $pkg" >&2; exit 1; }
        case $found in
            *.xz) xz -dc "$found" > "$ir/lib/modules/$m.ko" ;;
            *.zst) zstd -qdc "$found" > "$ir/lib/modules/$m.ko" ;;
            *) cp "$found" "$ir/lib/modules/$m.ko" ;;
        esac
        echo "$m" >> "$ir/lib/modules/order"
    done
    cat > "$ir/bin/udhcpc.script" <<'DHCP'
#!/bin/sh
case $1 in
    bound|renew) ip addr add "$ip/${mask:-16}" dev "$interface" ;;
esac
DHCP
    chmod 755 "$ir/bin/udhcpc.script"
    cat > "$ir/init" <<'INIT'
#!/bin/sh
# pxed end-to-end payload: prove the kernel booted with the command line pxed chose.
export PATH=/bin
mount -t proc proc /proc
mount -t devtmpfs devtmpfs /dev 2>/dev/null
callback=
for arg in $(cat /proc/cmdline); do
    case $arg in pxed.callback=*) callback=${arg#pxed.callback=} ;; esac
done
if [ -n "$callback" ]; then
    for m in $(cat /lib/modules/order); do insmod "/lib/modules/$m.ko"; done
    ip link set lo up
    ip link set eth0 up
    udhcpc -i eth0 -q -n -t 10 -s /bin/udhcpc.script >/dev/null 2>&1
    answer=$(wget -q -O - "$callback" 2>&1)
    echo "PXED-E2E-CALLBACK $answer" > /dev/console
fi
# Debian's kernel locks itself down ([integrity]) when the firmware booted it
# with Secure Boot on: the GRUB scenarios read Secure Boot's state here.
mount -t sysfs sysfs /sys 2>/dev/null
mount -t securityfs securityfs /sys/kernel/security 2>/dev/null
echo "PXED-E2E-LOCKDOWN $(cat /sys/kernel/security/lockdown 2>/dev/null)" > /dev/console
echo "PXED-E2E-BOOTED cmdline=$(cat /proc/cmdline)" > /dev/console
poweroff -f
INIT
    chmod 755 "$ir/init"
    (cd "$ir" && find . | "$busybox" cpio -o -H newc 2>/dev/null) | gzip -9n > "$tmp/out/initrd.gz"
    printf '%s %s\n' "$pkg" "$kver" > "$tmp/out/kernel-package"
    touch "$tmp/out/done"
    rm -rf "$dir"
    mv "$tmp/out" "$dir"
fi
echo "$dir"
