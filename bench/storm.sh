#!/usr/bin/env bash
# bench/storm.sh [MACHINES]: the simulated boot storm of issue 7 (default
# 10,000 machines) against pxed, then the same storm against its peers
# (dnsmasq for DHCP + TFTP, nginx serving a static boot.ipxe and script), in
# the same run; prints both summaries and the ratio of wall times.
#
# Each machine (examples/storm/machine/mod.rs) boots like a BIOS server whose
# PXE ROM chainloads iPXE: DHCP as the ROM (option 93 = 0, PXEClient), TFTP of
# undionly.kpxe from siaddr (half of them first do the ROM's tsize -> OACK ->
# ERROR 8 -> RRQ again), DHCP as iPXE (user class iPXE), GET boot.ipxe, GET the
# chained /ipxe?product=...&mac=... script. Every step has a timeout and
# retries; a machine that fails a step after its retries counts as a failure of
# that step. At most CONCURRENCY machines boot at once.
#
# Two network namespaces joined by a veth pair: the server in one (10.96.0.1/18,
# pinned to CPU 0), the storm client in the other (10.96.0.2/18, CPU 1). All
# simulated machines share the client's one address for TFTP and HTTP (giving
# each its leased address would need 10,000 neighbour entries); DHCP is real
# broadcast on the link. Every process started here is ended by its own PID,
# and the namespaces are deleted on exit.
#
# Usage (root): bench/storm.sh [MACHINES]
# Environment: CONCURRENCY=256, PROBE_SHARE=0.5, SERVERS="pxed peers",
#              DHCP_TRIES=4 (DORA attempts per DHCP step, waits of 1, 2, 4, 8 s
#              as iPXE does; a NAK starts the next attempt),
#              DNSMASQ_OPTS (extra dnsmasq flags, e.g. --leasefile-ro: no lease
#              file, which dnsmasq otherwise rewrites whole on every change),
#              SKIP_BUILD=1 (use the existing release build), KEEP=1 (keep the
#              work directory with logs), NICE=-10,
#              PXED=path (another pxed binary, e.g. one built with
#              --no-default-features: the system allocator, which heap
#              profilers see), PXED_WRAP="heaptrack -o /tmp/storm" (a command
#              pxed runs under; the peak RSS is then pxed's own, not the
#              wrapper's).
# Needs: iproute2, util-linux (taskset), ipxe (undionly.kpxe); for the peers
# dnsmasq-base and nginx (nginx-light is enough).
set -euo pipefail

machines=${1:-10000}
concurrency=${CONCURRENCY:-256}
probe_share=${PROBE_SHARE:-0.5}
servers=${SERVERS:-pxed peers}
case " $servers " in *" peers "*) peers=1 ;; *) peers=0 ;; esac
case " $servers " in *" pxed "*) with_pxed=1 ;; *) with_pxed=0 ;; esac
prio="nice -n ${NICE:--10}"
here=$(cd "$(dirname "$0")/.." && pwd)
. "$here/bench/lib.sh"
undionly=/usr/lib/ipxe/undionly.kpxe

[ "$(id -u)" = 0 ] || { echo "bench/storm.sh: needs root (network namespaces)" >&2; exit 1; }
for tool in ip taskset; do
    command -v $tool >/dev/null || { echo "bench/storm.sh: $tool is not installed" >&2; exit 1; }
done
[ -f "$undionly" ] || { echo "bench/storm.sh: no $undionly (apt-get install ipxe)" >&2; exit 1; }
if [ "$peers" = 1 ]; then
    for tool in dnsmasq nginx; do
        command -v $tool >/dev/null || { echo "bench/storm.sh: $tool is not installed (SERVERS=pxed skips the peers)" >&2; exit 1; }
    done
fi

if [ "${SKIP_BUILD:-}" != 1 ]; then
    (cd "$here" && cargo build --release --quiet --bin pxed --example storm)
fi
pxed=${PXED:-$here/target/release/pxed}
storm=$here/target/release/examples/storm

srv=pxs-srv-$$
cli=pxs-cli-$$
work=$(mktemp -d /tmp/pxed-bench-storm.XXXXXX)
chmod 755 "$work"
pids=()
cleanup() {
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
    ip netns del "$srv" 2>/dev/null || true
    ip netns del "$cli" 2>/dev/null || true
    [ "${KEEP:-}" = 1 ] || rm -rf "$work"
}
trap cleanup EXIT

veth_pair "$srv" "$cli" 10.96.0.1/18 10.96.0.2/18

# --- pxed --------------------------------------------------------------------
mkdir -p "$work/pxed/assets"
cp -r "$here/boot-templates" "$work/pxed/"
{
    cat <<EOF
[server]
http_listen = "0.0.0.0:8080"
tftp_listen = "0.0.0.0:69"
admin_listen = "127.0.0.1:9090"
search_paths = ["/usr/lib/ipxe"]

EOF
    cat "$here/bench/storm.toml"
} >"$work/pxed/machines.toml"

# --- peers: dnsmasq (DHCP + TFTP) and nginx (a static boot.ipxe and script) ---
mkdir -p "$work/tftp" "$work/www" "$work/nginx"
cp "$undionly" "$work/tftp/"
# The same bootstrap pxed serves (the client follows its chain line) ...
cat >"$work/www/boot.ipxe" <<'EOF'
#!ipxe
chain --autofree http://10.96.0.1:8080/ipxe?product=${product:uristring}&serial=${serial:uristring}&manufacturer=${manufacturer:uristring}&uuid=${uuid}&mac=${mac}&platform=${platform}&buildarch=${buildarch}
EOF
# ... and one static script for every machine (nginx ignores the query).
cat >"$work/www/ipxe" <<'EOF'
#!ipxe
echo static script for every machine
kernel http://10.96.0.1:8080/assets/debian/vmlinuz initrd=initrd.gz ip=dhcp
initrd http://10.96.0.1:8080/assets/debian/initrd.gz
boot
EOF
cat >"$work/nginx/nginx.conf" <<EOF
worker_processes 1;
daemon off;
user root;
pid $work/nginx/nginx.pid;
error_log $work/nginx/error.log warn;
events { worker_connections 8192; }
http {
    access_log off;
    default_type text/plain;
    client_body_temp_path $work/nginx/body;
    proxy_temp_path $work/nginx/proxy;
    fastcgi_temp_path $work/nginx/fastcgi;
    uwsgi_temp_path $work/nginx/uwsgi;
    scgi_temp_path $work/nginx/scgi;
    server {
        listen 10.96.0.1:8080 backlog=4096;
        root $work/www;
    }
}
EOF

wait_server_udp() { # port
    wait_udp "$srv" "$1" && return 0
    echo "bench/storm.sh: nothing listens on UDP $1; logs in $work" >&2
    return 1
}

rss_kib() { awk '/VmHWM/ {print $2}' "/proc/$1/status" 2>/dev/null || echo 0; }

run_storm() { # name extra-flags... → summary in $work/storm-<name>.txt
    local name=$1
    shift
    timeout $((machines / 20 + 300)) ip netns exec "$cli" $prio taskset -c 1 "$storm" \
        --interface vc --machines "$machines" --concurrency "$concurrency" \
        --probe-share "$probe_share" --dhcp-tries "${DHCP_TRIES:-4}" --expect "$undionly" "$@" \
        >"$work/storm-$name.txt" 2>&1 || true
    echo "== $name: $machines machines, concurrency $concurrency"
    cat "$work/storm-$name.txt"
}

if [ "$with_pxed" = 1 ]; then
    # `ip netns exec`, `nice` and `taskset` exec the server: $! is its PID.
    PXED_LOG=warn ip netns exec "$srv" $prio taskset -c 0 ${PXED_WRAP:-} "$pxed" serve --config "$work/pxed/machines.toml" \
        2>"$work/pxed.log" &
    pxed_pid=$!
    pids+=("$pxed_pid")
    wait_server_udp 67 && wait_server_udp 69
    if [ -n "${PXED_WRAP:-}" ]; then
        # The wrapper's child running our binary (found by parent PID, so
        # never another engineer's pxed); ending it lets the wrapper finish.
        wrapper_pid=$pxed_pid
        pxed_pid=$(ps -o pid=,args= --ppid "$wrapper_pid" | awk -v p="$pxed" '$2 == p {print $1; exit}')
        [ -n "$pxed_pid" ] || { echo "bench/storm.sh: pxed did not start under PXED_WRAP; logs in $work" >&2; exit 1; }
    fi
    run_storm pxed
    echo "server_peak_rss_kib=$(rss_kib "$pxed_pid") (pxed)"
    kill "$pxed_pid" 2>/dev/null || true
    wait "${wrapper_pid:-$pxed_pid}" 2>/dev/null || true
fi

if [ "$peers" = 1 ]; then
    ip netns exec "$srv" $prio taskset -c 0 dnsmasq --no-daemon --conf-file=/dev/null --port=0 \
        --interface=vs --bind-interfaces --dhcp-authoritative --user=root --no-ping \
        --dhcp-range=10.96.1.0,10.96.63.254,255.255.192.0,1h --dhcp-lease-max=20000 \
        --dhcp-leasefile="$work/dnsmasq.leases" --pid-file= --quiet-dhcp --quiet-tftp \
        --dhcp-userclass=set:ipxe,iPXE --dhcp-boot=tag:!ipxe,undionly.kpxe \
        --dhcp-boot=tag:ipxe,http://10.96.0.1:8080/boot.ipxe \
        --enable-tftp --tftp-root="$work/tftp" --tftp-max=512 \
        --log-facility="$work/dnsmasq.log" ${DNSMASQ_OPTS:-} &
    dnsmasq_pid=$!
    pids+=("$dnsmasq_pid")
    ip netns exec "$srv" $prio taskset -c 0 nginx -c "$work/nginx/nginx.conf" 2>>"$work/nginx/error.log" &
    nginx_pid=$!
    pids+=("$nginx_pid")
    wait_server_udp 67 && wait_server_udp 69
    for _ in $(seq 50); do
        ip netns exec "$srv" ss -lnt | grep -q ':8080 ' && break
        sleep 0.1
    done
    run_storm peers --static-script
    worker=$(pgrep -P "$nginx_pid" | head -1 || true)
    peer_rss=$(( $(rss_kib "$dnsmasq_pid") + $(rss_kib "$nginx_pid") ))
    if [ -n "$worker" ]; then peer_rss=$((peer_rss + $(rss_kib "$worker"))); fi
    echo "server_peak_rss_kib=$peer_rss (dnsmasq + nginx master and worker)"
    kill "$dnsmasq_pid" "$nginx_pid" 2>/dev/null || true
    wait "$dnsmasq_pid" "$nginx_pid" 2>/dev/null || true

fi
if [ "$peers" = 1 ] && [ "$with_pxed" = 1 ]; then
    field() { # file key → value of key=value on the summary line
        awk -v k="$2" '{ for (i = 1; i <= NF; i++) if (index($i, k "=") == 1) { print substr($i, length(k) + 2); exit } }' "$1"
    }
    wp=$(field "$work/storm-pxed.txt" wall_s)
    wq=$(field "$work/storm-peers.txt" wall_s)
    fp=$(field "$work/storm-pxed.txt" failed)
    fq=$(field "$work/storm-peers.txt" failed)
    echo
    awk -v p="${wp:-0}" -v q="${wq:-0}" -v fp="${fp:-?}" -v fq="${fq:-?}" 'BEGIN {
        if (p > 0 && q > 0) printf "wall time pxed / (dnsmasq + nginx) = %.2f s / %.2f s = %.2fx (lower is better for pxed); failed machines: pxed %s, peers %s\n", p, q, p / q, fp, fq
        else print "wall time ratio: a run did not finish; see the summaries above" }'
fi
echo "(logs: $work; KEEP=1 keeps them)"
