#!/bin/sh
# Builds the end-to-end guest payload from Debian packages and prints the
# directory holding it: `vmlinuz` (the kernel of linux-image-cloud-amd64) and
# `initrd.gz` (a busybox-static initramfs whose /init prints
# `PXED-E2E-BOOTED cmdline=<…>` on the console and powers off). With
# `pxed.callback=<url>` on its command line it first plays an installer that
# finished: it brings up a virtio NIC (the cloud kernel has no e1000 driver;
# the modules come from the same kernel package), gets an address by DHCP and
# calls the URL with busybox wget, printing `PXED-E2E-CALLBACK <answer>`.
#
# Usage: payload.sh CACHE_ROOT
# The payload is cached in CACHE_ROOT/<kernel package>_<version>-busybox_<version>-r<REV>
# and built once; a lock serialises concurrent callers (tests/common/lab.rs and
# bench/boot.sh both call this). Needs apt-get (the kernel is downloaded, not
# installed), dpkg-deb, busybox (static), gzip and flock. Nothing here is committed.
set -eu

root=${1:?usage: payload.sh CACHE_ROOT}
# Bump when /init or the layout below changes.
REV=2
META=linux-image-cloud-amd64

# The metapackage depends on the real, versioned image package:
# "Depends: linux-image-6.1.0-56-cloud-amd64 (= 6.1.192-2)". One apt-cache call:
# without a package cache file (Debian container images) each call parses every
# package list, seconds on a busy machine.
dep=$(apt-cache show --no-all-versions "$META" 2>/dev/null | sed -n 's/^Depends: \(linux-image-[^,]*\).*/\1/p' | head -n 1)
pkg=${dep%% *}
kver=$(printf '%s\n' "$dep" | sed -n 's/.*(= \([^)]*\)).*/\1/p')
if [ -z "$pkg" ] || [ -z "$kver" ]; then
    echo "payload: cannot resolve $META with apt-cache (run apt-get update?)" >&2
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
    (cd "$tmp" && apt-get -q -o APT::Sandbox::User=root download "$pkg=$kver") >&2
    dpkg-deb -x "$tmp"/*.deb "$tmp/pkg"
    mkdir "$tmp/out"
    cp "$tmp"/pkg/boot/vmlinuz-* "$tmp/out/vmlinuz"

    ir=$tmp/initramfs
    mkdir -p "$ir/bin" "$ir/dev" "$ir/proc" "$ir/sys"
    cp "$busybox" "$ir/bin/busybox"
    for applet in sh mount cat echo poweroff sleep insmod ip udhcpc wget; do
        ln -s busybox "$ir/bin/$applet"
    done
    # virtio-net and what it needs, in load order.
    mkdir -p "$ir/lib/modules"
    for m in virtio_ring virtio virtio_pci_modern_dev virtio_pci_legacy_dev virtio_pci failover net_failover virtio_net; do
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
