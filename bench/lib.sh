# bench/lib.sh: the network setups the bench scripts share. Sourced, not run:
#   . "$(dirname "$0")/lib.sh"
# Every namespace made here is the caller's to delete (its cleanup trap).

# veth_pair SRV CLI SRV_CIDR CLI_CIDR: two new namespaces joined by a veth
# pair, `vs` in SRV and `vc` in CLI, loopback up in both (the DHCP and storm
# benches: server in one namespace, load client in the other).
veth_pair() {
    local srv=$1 cli=$2
    ip netns add "$srv"
    ip netns add "$cli"
    ip -n "$srv" link set lo up
    ip -n "$cli" link set lo up
    ip -n "$srv" link add vs type veth peer name vc netns "$cli"
    ip -n "$srv" addr add "$3" dev vs
    ip -n "$cli" addr add "$4" dev vc
    ip -n "$srv" link set vs up
    ip -n "$cli" link set vc up
}

# bridge_lab NS CIDR [CIDR6]: the lab of tests/common/lab.rs: a new namespace
# with bridge br0 at CIDR (and CIDR6, if given), one tap (tap0) on the bridge
# for a QEMU guest, and no duplicate address detection (addresses are usable
# at once).
bridge_lab() {
    local ns=$1
    ip netns add "$ns"
    ip -n "$ns" link set lo up
    ip netns exec "$ns" sh -c 'echo 0 > /proc/sys/net/ipv6/conf/all/accept_dad; echo 0 > /proc/sys/net/ipv6/conf/default/accept_dad'
    ip -n "$ns" link add br0 type bridge forward_delay 0
    ip -n "$ns" addr add "$2" dev br0
    if [ -n "${3:-}" ]; then ip -n "$ns" addr add "$3" dev br0 nodad; fi
    ip -n "$ns" link set br0 up
    ip -n "$ns" tuntap add tap0 mode tap
    ip -n "$ns" link set tap0 master br0 up
}

# wait_udp NS PORT: waits up to 10 s for a UDP socket on PORT in NS.
wait_udp() {
    for _ in $(seq 100); do
        if ip netns exec "$1" ss -lnu | grep -q ":$2 "; then return 0; fi
        sleep 0.1
    done
    return 1
}
