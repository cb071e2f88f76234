# Two "hosts" as network namespaces joined by a veth pair (sourced by demo.sh,
# bench-migration.sh and reliability.sh).
#
# two_hosts_up NS_A IP_A NS_B IP_B VETH: (re)creates both namespaces with loopback up and the
#   pair VETH"a" (in NS_A, IP_A/24) / VETH"b" (in NS_B, IP_B/24), both up.
# two_hosts_down NS...: stops every process still running in the namespaces, then deletes them
#   (the veth pair goes with them). Safe to call when they do not exist.

two_hosts_down() {
  local ns
  for ns in "$@"; do
    ip netns pids "$ns" 2>/dev/null | xargs -r kill 2>/dev/null || true
    ip netns del "$ns" 2>/dev/null || true
  done
}

two_hosts_up() {
  local a=$1 ip_a=$2 b=$3 ip_b=$4 veth=$5 ns
  two_hosts_down "$a" "$b"
  ip link del "${veth}a" 2>/dev/null || true
  ip netns add "$a"
  ip netns add "$b"
  ip link add "${veth}a" type veth peer name "${veth}b"
  ip link set "${veth}a" netns "$a"
  ip link set "${veth}b" netns "$b"
  ip -n "$a" addr add "$ip_a/24" dev "${veth}a"
  ip -n "$b" addr add "$ip_b/24" dev "${veth}b"
  for ns in "$a" "$b"; do ip -n "$ns" link set lo up; done
  ip -n "$a" link set "${veth}a" up
  ip -n "$b" link set "${veth}b" up
}
