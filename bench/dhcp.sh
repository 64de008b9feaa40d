#!/usr/bin/env bash
# DHCP throughput: pxed vs Kea (memfile) vs dnsmasq, and on PostgreSQL one
# pxed vs two pxed vs Kea's PostgreSQL lease backend; same run, same network;
# each server as shipped (pxed: boot events on, info logging, no fsync per
# commit, as `lease_fsync = false` ships).
#
# Two network namespaces joined by a veth pair: the server runs in one, pinned
# to CPU 0; perfdhcp runs in the other, pinned to CPU 1, for up to a million
# simulated clients, in two modes:
#   relay      perfdhcp sends to 10.80.0.1 as a relay (giaddr 10.80.0.2);
#   broadcast  perfdhcp -B sends to 255.255.255.255, as a PXE ROM does (it
#              still sets giaddr, so replies go back to it by unicast; Kea
#              then needs "dhcp-socket-type": "raw" to see broadcasts). Only
#              pxed, kea and dnsmasq: the PostgreSQL pair listens on two
#              addresses, each behind its own relay.
#   v6         DHCPv6: perfdhcp -6 multicasts Solicit and Request to
#              ff02::1:2 from its link-local address, as a client on the link
#              does (a DUID-LLT per simulated client); pxed (full mode, an
#              IA_NA pool in fd80::/64, leases in its SQLite file as for
#              IPv4) against kea-dhcp6 (memfile). Only pxed and kea. Each
#              exchange is Solicit-Advertise + Request-Reply where the v4
#              modes have DORA.
# Each offered rate (250 → 32,000 DORA/s) gets a fresh server with an empty
# lease file, for STEP seconds. A rate passes when fewer than 1% of
# DISCOVER-OFFER and of REQUEST-ACK exchanges are dropped (a failed rate is
# tried once more); the servers take turns at each rate, and a server's climb
# stops at its first rate that fails twice. Every step prints the server's CPU
# per completed exchange, and perfdhcp's own CPU (`gen%`, 100 = its core is
# full) and socket overflows (`cli ovfl`): when those fail a rate, perfdhcp
# was the limit, not the server. Reported per server and mode: the highest
# passing rate, avg/max latency at that rate, CPU per exchange and peak RSS;
# then pxed's CPU per exchange over Kea's at the highest rate both passed.
# Everything runs only inside the namespaces created here, every process is
# ended by its own PID, and each step is bounded by `timeout`.
#
# PostgreSQL rows (docs/ha.md): one cluster made by initdb in the work
# directory, run as `postgres`, on a unix socket only, a fresh database per
# step. `pxed-pg`: one pxed on it; `pxed-pg2`: two pxed (both pinned to CPU 0,
# the one pxed's budget), each behind its own relay address, half the rate
# each; `kea-pg`: Kea with `"type": "postgresql"` (schema by kea-admin
# db-init pgsql). The database is not pinned; its CPU is the `db cpu%` column.
#
# Usage (root): bench/dhcp.sh [pxed-binary]      (default target/release/pxed)
# Environment: STEP=5 (seconds per rate), RATES="500 1000 ... 32000",
#              MODES="relay broadcast v6", SERVERS="pxed kea dnsmasq pxed-pg pxed-pg2 kea-pg",
#              PXED_FSYNC=false|true (lease_fsync; false is the shipped default),
#              PXED_LOG (default: unset, i.e. info, as shipped),
#              KEEP=1 (keep the work directory), KEA_MT=true|false (Kea multi-threading,
#              default true: its better figure here), NICE=-10.
# Needs: kea-admin (perfdhcp), kea-dhcp4-server, kea-dhcp6-server, dnsmasq-base, iproute2, util-linux (taskset),
#        postgresql (the PostgreSQL rows).
set -euo pipefail

here=$(cd "$(dirname "$0")/.." && pwd)
. "$here/bench/lib.sh"
pxed=${1:-$here/target/release/pxed}
step=${STEP:-5}
rates=${RATES:-"250 500 1000 2000 3000 4000 6000 8000 10000 12000 16000 20000 24000 32000"}
servers=${SERVERS:-"pxed kea dnsmasq pxed-pg pxed-pg2 kea-pg"}
modes=${MODES:-"relay broadcast v6"}
fsync=${PXED_FSYNC:-false}
# The machine is shared (other people compile on it): servers and perfdhcp run
# at a higher priority than background builds, all servers alike. NICE=0 turns
# that off.
prio="nice -n ${NICE:--10}"

[ "$(id -u)" = 0 ] || { echo "bench/dhcp.sh: needs root (network namespaces)" >&2; exit 1; }
for tool in perfdhcp taskset ip; do
    command -v $tool >/dev/null || { echo "bench/dhcp.sh: $tool is not installed" >&2; exit 1; }
done
[ -x "$pxed" ] || { echo "bench/dhcp.sh: no pxed binary at $pxed (cargo build --release)" >&2; exit 1; }

srv=pxb-srv-$$
cli=pxb-cli-$$
work=$(mktemp -d /tmp/pxed-bench-dhcp.XXXXXX)
server_pid=
server2_pid=
pg_bin=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1)
cleanup() {
    [ -n "$server_pid" ] && kill "$server_pid" 2>/dev/null || true
    [ -n "$server2_pid" ] && kill "$server2_pid" 2>/dev/null || true
    [ -f "$work/pg/data/postmaster.pid" ] && runuser -u postgres -- "$pg_bin/pg_ctl" -D "$work/pg/data" -m immediate -w stop >/dev/null 2>&1 || true
    ip netns del "$srv" 2>/dev/null || true
    ip netns del "$cli" 2>/dev/null || true
    [ "${KEEP:-}" = 1 ] || rm -rf "$work"
}
trap cleanup EXIT

veth_pair "$srv" "$cli" 10.80.0.1/12 10.80.0.2/12
# The second pxed and the second relay of `pxed-pg2`.
ip -n "$srv" addr add 10.80.0.3/12 dev vs
ip -n "$cli" addr add 10.80.0.4/12 dev vc
# The v6 mode: the server's global address (pxed joins ff02::1:2 on `vs`), and
# link-local addresses usable before perfdhcp starts (no DAD wait). perfdhcp
# sends every simulated client from vc's one link-local address: pxed takes a
# MAC from an EUI-64 link-local address before the DUID (BRIEF "IPv6
# netboot"), so an EUI-64 one would make a million clients one MAC (rate
# limited); a random one leaves each client its DUID-LLT's MAC.
ip -n "$srv" addr add fd80::1/64 dev vs nodad
for ns in "$srv" "$cli"; do
    ip netns exec "$ns" sh -c 'for f in /proc/sys/net/ipv6/conf/*/accept_dad; do echo 0 > "$f"; done'
done
ip -n "$cli" link set vc down
ip -n "$cli" link set vc addrgenmode random
ip -n "$cli" link set vc up
for _ in $(seq 50); do
    [ -z "$(ip -n "$cli" -6 addr show dev vc tentative)" ] && break
    sleep 0.1
done

pool_first=10.80.1.0
pool_last=10.95.255.254

# --- configs -----------------------------------------------------------------
mkdir -p "$work/pxed"
cp -r "$here/boot-templates" "$work/pxed/"
cat >"$work/pxed/machines.toml" <<EOF
[server]
http_listen = "0.0.0.0:8080"
tftp_listen = ""
search_paths = []
[dhcp]
mode = "full"
lease_fsync = $fsync
[[dhcp.subnet]]
network = "10.80.0.0/12"
pool = "$pool_first-$pool_last"
router = "10.80.0.1"
lease_time = 3600
[defaults]
kernel = "vmlinuz"
[[rule]]
name = "default"
EOF

# The v6 mode's pxed: DHCPv6 alone (no IPv4 subnet), a pool of 2^48.
mkdir -p "$work/pxed6"
cp -r "$here/boot-templates" "$work/pxed6/"
sed -e '/^\[\[dhcp.subnet\]\]/,/^lease_time/d' -e 's,^mode = "full",mode = "full"\ninterfaces = ["vs"],' \
    -e 's,^\[defaults\],[[dhcp.subnet]]\nnetwork = "fd80::/64"\npool = "fd80::1:0:0-fd80::ffff:ffff:ffff"\nlease_time = 3600\n[defaults],' \
    "$work/pxed/machines.toml" >"$work/pxed6/machines.toml"

cat >"$work/kea6.json" <<EOF
{ "Dhcp6": {
    "interfaces-config": { "interfaces": [ "vs" ] },
    "server-id": { "type": "LL", "persist": false },
    "lease-database": { "type": "memfile", "persist": true,
                        "name": "$work/kea-leases6.csv", "lfc-interval": 0 },
    "valid-lifetime": 3600, "preferred-lifetime": 3000,
    "multi-threading": { "enable-multi-threading": ${KEA_MT:-true},
                         "thread-pool-size": ${KEA_THREADS:-2}, "packet-queue-size": 256 },
    "subnet6": [ { "id": 1, "subnet": "fd80::/64", "interface": "vs",
                   "pools": [ { "pool": "fd80::1:0:0 - fd80::ffff:ffff:ffff" } ] } ],
    "loggers": [ { "name": "kea-dhcp6", "severity": "WARN",
                   "output_options": [ { "output": "stderr" } ] } ]
} }
EOF

cat >"$work/kea.json" <<EOF
{ "Dhcp4": {
    "interfaces-config": { "interfaces": [ "vs" ], "dhcp-socket-type": "udp" },
    "lease-database": { "type": "memfile", "persist": true,
                        "name": "$work/kea-leases.csv", "lfc-interval": 0 },
    "valid-lifetime": 3600,
    "multi-threading": { "enable-multi-threading": ${KEA_MT:-true},
                         "thread-pool-size": ${KEA_THREADS:-2}, "packet-queue-size": 256 },
    "subnet4": [ { "id": 1, "subnet": "10.80.0.0/12",
                   "pools": [ { "pool": "$pool_first - $pool_last" } ],
                   "option-data": [ { "name": "routers", "data": "10.80.0.1" } ] } ],
    "loggers": [ { "name": "kea-dhcp4", "severity": "WARN",
                   "output_options": [ { "output": "stderr" } ] } ]
} }
EOF
# Broadcasts from clients on the link: a UDP socket bound to the interface
# address does not see them; Kea's raw sockets do.
sed 's|"dhcp-socket-type": "udp"|"dhcp-socket-type": "raw"|' "$work/kea.json" >"$work/kea-raw.json"

# The PostgreSQL rows' configs: pxed's with [database] (and for the pair,
# each on its own address), Kea's with its PostgreSQL lease backend.
pg_sock=$work/pg
pg_url="postgres://pxed@$(echo "$pg_sock" | sed 's,/,%2F,g')/bench"
for n in 1 2; do
    mkdir -p "$work/pxed-pg$n"
    cp -r "$here/boot-templates" "$work/pxed-pg$n/"
    sed -e "s,^http_listen = .*,http_listen = \"10.80.0.$((2 * n - 1)):8080\"\nadmin_listen = \"\"\nname = \"pg$n\"," \
        -e "s,^mode = \"full\",mode = \"full\"\nlisten = \"10.80.0.$((2 * n - 1)):67\"," \
        "$work/pxed/machines.toml" >"$work/pxed-pg$n/machines.toml"
    printf '[database]\nurl = "%s"\n' "$pg_url" >>"$work/pxed-pg$n/machines.toml"
done
sed -e 's|"type": "memfile", "persist": true,||' \
    -e "s|\"name\": \"$work/kea-leases.csv\", \"lfc-interval\": 0|\"type\": \"postgresql\", \"name\": \"kea\", \"user\": \"pxed\", \"host\": \"$pg_sock\"|" \
    "$work/kea.json" >"$work/kea-pg.json"

# pg_start: a cluster of our own (initdb as `postgres`, socket only).
pg_start() {
    [ -f "$pg_sock/data/postmaster.pid" ] && return 0
    [ -n "$pg_bin" ] || { echo "bench/dhcp.sh: PostgreSQL is not installed" >&2; return 1; }
    # `postgres` must get through the work directory to its own.
    chmod 711 "$work"
    mkdir -p "$pg_sock" && chown postgres "$pg_sock"
    [ -d "$pg_sock/data" ] || runuser -u postgres -- "$pg_bin/initdb" -D "$pg_sock/data" -U pxed \
        --auth=trust -E UTF8 --no-sync >"$work/pg-initdb.log" 2>&1
    runuser -u postgres -- "$pg_bin/pg_ctl" -D "$pg_sock/data" -l "$pg_sock/server.log" -w start \
        -o "-k $pg_sock -c listen_addresses= -c max_connections=100" >/dev/null
}
# pg_fresh DB: the database DB empty.
pg_fresh() {
    "$pg_bin/psql" -h "$pg_sock" -U pxed -d postgres -X -q -c "DROP DATABASE IF EXISTS $1" -c "CREATE DATABASE $1"
}
# The database's CPU ticks: every process of our cluster.
pg_ticks() {
    local pm t=0
    pm=$(head -1 "$pg_sock/data/postmaster.pid" 2>/dev/null) || { echo 0; return; }
    for p in $pm $(pgrep -P "$pm"); do
        t=$((t + $(awk '{print $14 + $15}' "/proc/$p/stat" 2>/dev/null || echo 0)))
    done
    echo $t
}

# --- servers -----------------------------------------------------------------
start_server() { # name mode → sets server_pid (and server2_pid for pxed-pg2)
    rm -f "$work"/*.leases "$work"/kea-leases*.csv* "$work"/pxed/pxed-*.sqlite* "$work"/pxed6/pxed-*.sqlite*
    local port=67
    # pxed logs at its shipped level (info) unless PXED_LOG says otherwise.
    case $2:$1 in
    v6:pxed)
        port=547
        ip netns exec "$srv" $prio taskset -c 0 "$pxed" serve --config "$work/pxed6/machines.toml" \
            2>>"$work/pxed6.log" &
        ;;
    v6:kea)
        port=547
        KEA_PIDFILE_DIR=$work KEA_LOCKFILE_DIR=$work \
            ip netns exec "$srv" $prio taskset -c 0 kea-dhcp6 -c "$work/kea6.json" 2>>"$work/kea6.log" >/dev/null &
        ;;
    *:pxed)
        ip netns exec "$srv" $prio taskset -c 0 "$pxed" serve --config "$work/pxed/machines.toml" \
            2>>"$work/pxed.log" &
        ;;
    *:pxed-pg | *:pxed-pg2)
        pg_start && pg_fresh bench
        if [ "$1" = pxed-pg2 ]; then
            ip netns exec "$srv" $prio taskset -c 0 "$pxed" serve --config "$work/pxed-pg2/machines.toml" \
                2>>"$work/pxed-pg2.log" &
            server2_pid=$!
        fi
        ip netns exec "$srv" $prio taskset -c 0 "$pxed" serve --config "$work/pxed-pg1/machines.toml" \
            2>>"$work/pxed-pg.log" &
        ;;
    *:kea-pg)
        pg_start && pg_fresh kea
        kea-admin db-init pgsql -u pxed -n kea -h "$pg_sock" >>"$work/kea-pg.log" 2>&1
        KEA_PIDFILE_DIR=$work KEA_LOCKFILE_DIR=$work \
            ip netns exec "$srv" $prio taskset -c 0 kea-dhcp4 -c "$work/kea-pg.json" 2>>"$work/kea-pg.log" >/dev/null &
        ;;
    *:kea)
        local conf=kea.json
        [ "$2" = broadcast ] && conf=kea-raw.json
        KEA_PIDFILE_DIR=$work KEA_LOCKFILE_DIR=$work \
            ip netns exec "$srv" $prio taskset -c 0 kea-dhcp4 -c "$work/$conf" 2>>"$work/kea.log" >/dev/null &
        ;;
    *:dnsmasq)
        ip netns exec "$srv" $prio taskset -c 0 dnsmasq --no-daemon --conf-file=/dev/null --port=0 \
            --interface=vs --bind-interfaces --dhcp-authoritative --user=root \
            --dhcp-range=$pool_first,$pool_last,255.240.0.0,1h --dhcp-lease-max=1000000 \
            --dhcp-leasefile="$work/dnsmasq.leases" --pid-file= --quiet-dhcp --no-ping \
            --log-facility="$work/dnsmasq.log" ${DNSMASQ_OPTS:-} &
        ;;
    esac
    server_pid=$!
    # `ip netns exec` and `taskset` exec the server: $! is the server's PID.
    # pxed on PostgreSQL binds at once but answers once its leases are read.
    if wait_udp "$srv" "$port"; then
        case $1 in pxed-pg*) sleep 2 ;; esac
        return 0
    fi
    echo "bench/dhcp.sh: $1 did not start; see $work/$1.log" >&2
    return 1
}

stop_server() {
    for p in $server_pid $server2_pid; do
        kill "$p" 2>/dev/null || true
        wait "$p" 2>/dev/null || true
    done
    server_pid=
    server2_pid=
}

# perfdhcp at RATE towards the server(s) of $1 for $step s in MODE, output in
# OUT (two halves, OUT.1 and OUT.2, for the pair).
load() { # server rate out mode
    if [ "$4" = v6 ]; then
        timeout $((step + 15)) ip netns exec "$cli" $prio taskset -c 1 \
            perfdhcp -6 -l vc -r "$2" -p "$step" -R 1000000 -W 1000000 >"$3.1" 2>&1 || true
        return
    fi
    if [ "$1" != pxed-pg2 ]; then
        local target=10.80.0.1 bflag=
        [ "$4" = broadcast ] && { target=; bflag=-B; }
        timeout $((step + 15)) ip netns exec "$cli" $prio taskset -c 1 \
            perfdhcp -4 $bflag -l vc -r "$2" -p "$step" -R 1000000 -W 1000000 $target >"$3.1" 2>&1 || true
        return
    fi
    # The pair: each relay address talks to its own pxed, with MACs of its own.
    local i=0 pids="" pair
    for pair in 10.80.0.2:10.80.0.1 10.80.0.4:10.80.0.3; do
        i=$((i + 1))
        timeout $((step + 15)) ip netns exec "$cli" $prio taskset -c 1 \
            perfdhcp -4 -B -l "${pair%%:*}" -r "$(($2 / 2))" -p "$step" -R 1000000 -W 1000000 \
            -b "mac=00:0$i:00:00:00:00" "${pair##*:}" >"$3.$i" 2>&1 &
        pids="$pids $!"
    done
    for p in $pids; do wait "$p" || true; done
}

# UDP receive-buffer overflows in a namespace (where a drop happened).
rcvbuf_errors() { ip netns exec "$1" awk '/^Udp:/ { if (h) print $6; h = 1 }' /proc/net/snmp; }

cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
# Both pxed of the pair, or the one server.
server_ticks() {
    local t=0 p
    for p in $server_pid $server2_pid; do t=$((t + $(cpu_ticks "$p"))); done
    echo $t
}
rss_kb() { awk '/VmHWM/ {print $2}' "/proc/$1/status"; }
# CPU seconds used so far by this shell's waited-for children (perfdhcp):
# `times` must run in this shell, not in a $(...) subshell.
children_cpu() { times >"$work/times"; awk 'NR == 2 { for (i = 1; i <= 2; i++) { split($i, t, /[ms]/); s += t[1] * 60 + t[2] } print s }' "$work/times"; }

# perfdhcp's summary → "sent1 recv1 sent2 recv2 avg_ms max_ms"
parse() {
    awk '
        /Statistics for: (DISCOVER-OFFER|SOLICIT-ADVERTISE)/ { ex = 1 }
        /Statistics for: (REQUEST-ACK|REQUEST-REPLY)/        { ex = 2 }
        /^sent packets:/     { sent[ex] = $3 }
        /^received packets:/ { recv[ex] = $3 }
        /^avg delay:/        { avg[ex] = $3 }
        /^max delay:/        { max[ex] = $3 }
        END { printf "%d %d %d %d %s %s\n", sent[1], recv[1], sent[2], recv[2], avg[2], max[2] }
    ' "$1"
}

# parse over the load's outputs (one, or the pair's two): sums, the worse
# latency.
parse_all() {
    local f s1=0 r1=0 s2=0 r2=0 avg=0 max=0 a b c d e g
    for f in "$1".*; do
        read -r a b c d e g <<<"$(parse "$f")"
        s1=$((s1 + a)); r1=$((r1 + b)); s2=$((s2 + c)); r2=$((r2 + d))
        avg=$(awk -v x="$avg" -v y="$e" 'BEGIN { print (y + 0 > x + 0) ? y : x }')
        max=$(awk -v x="$max" -v y="$g" 'BEGIN { print (y + 0 > x + 0) ? y : x }')
    done
    echo "$s1 $r1 $s2 $r2 $avg $max"
}

hz=$(getconf CLK_TCK)
available=""
for s in $servers; do
    case $s in
    kea|kea-pg) command -v kea-dhcp4 >/dev/null || { echo "skipping $s: kea-dhcp4-server not installed"; continue; } ;;
    dnsmasq) command -v dnsmasq >/dev/null || { echo "skipping dnsmasq: not installed"; continue; } ;;
    esac
    available="$available $s"
done
# Every step: "mode server rate ok us/DORA avg max cpu% rss" (the summary reads it).
steps="$work/steps.txt"
: >"$steps"

# One step: server $1 at rate $2 in mode $3, attempt $4 → prints its row,
# appends it to $steps, and returns 0 if it passed.
step_once() {
    local s=$1 rate=$2 mode=$3 attempt=$4
    start_server "$s" "$mode" || return 1
    local t0 d0 w0 e0s e0c t1 d1 w1 e1s e1c rss out
    t0=$(server_ticks); d0=$(pg_ticks); w0=$(date +%s%N)
    e0s=$(rcvbuf_errors "$srv"); e0c=$(rcvbuf_errors "$cli")
    children_cpu >"$work/c0"
    out="$work/perf-$mode-$s-$rate-$attempt.txt"
    load "$s" "$rate" "$out" "$mode"
    children_cpu >"$work/c1"
    t1=$(server_ticks); d1=$(pg_ticks); w1=$(date +%s%N)
    rss=$(rss_kb "$server_pid")
    e1s=$(rcvbuf_errors "$srv"); e1c=$(rcvbuf_errors "$cli")
    stop_server
    local s1 r1 s2 r2 avg max drop cpu per gen dbcpu ok mb
    read -r s1 r1 s2 r2 avg max <<<"$(parse_all "$out")"
    drop=$(awk -v s1="$s1" -v r1="$r1" -v s2="$s2" -v r2="$r2" 'BEGIN {
        d1 = s1 > 0 ? 100 * (s1 - r1) / s1 : 100; d2 = s2 > 0 ? 100 * (s2 - r2) / s2 : 100
        printf "%.2f", (d1 > d2 ? d1 : d2) }')
    # Server CPU over the step's wall time (sending + perfdhcp's wait), and
    # per completed exchange; perfdhcp's own CPU over the same wall time.
    cpu=$(awk -v t="$((t1 - t0))" -v hz="$hz" -v w="$((w1 - w0))" 'BEGIN { printf "%.0f", 100 * t / hz / (w / 1e9) }')
    per=$(awk -v t="$((t1 - t0))" -v hz="$hz" -v n="$r2" 'BEGIN { if (n > 0) printf "%.0f", t / hz * 1e6 / n; else print "-" }')
    gen=$(awk -v a="$(cat "$work/c0")" -v b="$(cat "$work/c1")" -v w="$((w1 - w0))" 'BEGIN { printf "%.0f", 100 * (b - a) / (w / 1e9) }')
    dbcpu=-
    case $s in *-pg*) dbcpu=$(awk -v t="$((d1 - d0))" -v hz="$hz" -v w="$((w1 - w0))" 'BEGIN { printf "%.0f", 100 * t / hz / (w / 1e9) }') ;; esac
    ok=$(awk -v d="$drop" 'BEGIN { print (d < 1.0) ? "yes" : "no" }')
    mb=$(awk -v r="$rss" 'BEGIN { printf "%.1f", r / 1024 }')
    printf '%-9s %-8s %7d %9d %9d %7s %4s %8s %9s %5s %8s %7s %8d %8d %5s %7s\n' "$mode" "$s" "$rate" "$s1" "$r2" "$drop" "$ok" "$avg" "$max" "$cpu" "$per" \
        "$mb" $((e1s - e0s)) $((e1c - e0c)) "$gen" "$dbcpu"
    echo "$mode $s $rate $ok $per $avg $max $cpu $mb" >>"$steps"
    [ "$ok" = yes ]
}

printf '%-9s %-8s %7s %9s %9s %7s %4s %8s %9s %5s %8s %7s %8s %8s %5s %7s\n' mode server rate "DO sent" "RA recv" "drop%" ok "avg ms" "max ms" "cpu%" "us/DORA" "rss MB" "srv ovfl" "cli ovfl" "gen%" "db cpu%"
for mode in $modes; do
    # Servers take turns at each rate, so that all of them see the same
    # machine (other people's builds come and go); a server leaves the climb
    # at its first rate that fails twice (one burst of someone's compile can
    # cost 1%, so a failed rate gets a second try).
    active=""
    for s in $available; do
        case $mode:$s in
        broadcast:*-pg* | v6:*-pg* | v6:dnsmasq) ;;
        v6:kea) command -v kea-dhcp6 >/dev/null && active="$active $s" ;;
        *) active="$active $s" ;;
        esac
    done
    for rate in $rates; do
        [ -n "${active// /}" ] || break
        still=""
        for s in $active; do
            if step_once "$s" "$rate" "$mode" 1 || step_once "$s" "$rate" "$mode" 2; then
                still="$still $s"
            fi
        done
        active=$still
    done
done

echo
echo "Highest offered rate with < 1% drops (${step}s per step, server on CPU 0, perfdhcp on CPU 1):"
printf '%-9s %-8s %8s %8s %9s %5s %8s %7s %8s\n' mode server "rate/s" "avg ms" "max ms" "cpu%" "us/DORA" "rss MB" "vs Kea*"
for mode in $modes; do
    for s in $available; do
        # The PostgreSQL rows compare with Kea on PostgreSQL.
        ref=kea
        case $s in *-pg*) ref=kea-pg ;; esac
        awk -v m="$mode" -v s="$s" -v ref="$ref" '
            $1 == m && $2 == ref && $4 == "yes" && $3 > k { k = $3 }
            $1 == m && $2 == s && $4 == "yes" && $3 > best { best = $3; line = $0 }
            $1 == m && $2 == s { seen = 1 }
            END {
                if (!seen) exit
                if (best == 0) { printf "%-9s %-8s %8s\n", m, s, "none"; exit }
                split(line, f, " ")
                printf "%-9s %-8s %8d %8s %9s %5s %8s %7s %8s\n", m, s, f[3], f[6], f[7], f[8], f[5], f[9], (k > 0 ? sprintf("%.2fx", f[3] / k) : "-")
            }' "$steps"
    done
    # Server CPU per exchange, pxed over Kea, at the highest rate both passed.
    awk -v m="$mode" '
        $1 == m && $4 == "yes" && ($2 == "pxed" || $2 == "kea") { cpu[$2, $3] = $5; if ($2 == "pxed") p[$3] = 1; else k[$3] = 1 }
        END {
            for (r in p) if ((r in k) && r + 0 > best) best = r + 0
            if (best > 0) printf "%-9s pxed/Kea server CPU per exchange at %d/s (the highest rate both passed): %s / %s us = %.2f\n", m, best, cpu["pxed", best], cpu["kea", best], cpu["pxed", best] / cpu["kea", best]
        }' "$steps"
done
echo "* the PostgreSQL rows (-pg) against kea-pg, the others against kea (memfile)."
echo "us/DORA: the server's CPU time per completed 4-message exchange. gen%: perfdhcp's"
echo "CPU over the step (100 = its core is full). When 'cli ovfl' or a full generator is"
echo "what failed the next rate, perfdhcp (one core) was the limit, not the server."
echo "(logs and perfdhcp outputs: $work; KEEP=1 keeps them)"
