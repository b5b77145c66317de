#!/usr/bin/env bash
# Multi-host on one machine (reliability issue; the CPU stand-in for multi-node runs): two network
# namespaces joined by a veth pair act as two hosts (10.77.0.1 and 10.77.0.2, each with its own
# hostname), Open MPI starts two ranks on each over TCP only (ob1 + tcp BTL on the veth subnet; the
# second host's daemon through an rsh agent that enters its namespace), `dpa_serve serve --device
# cpu` binds rank 0's HTTP on the first host's address, and a client on the second host gets a
# completion and a stream end to end; SIGTERM to rank 0 drains every rank (exit 0).
# Needs root with network and UTS namespaces (ip netns, unshare); exits 77 (skipped) without.
#   multihost_netns_e2e.sh MPIEXEC DPA_SERVE WORKDIR
set -u
mpiexec=$1; bin=$2; work=$3
here=$(cd "$(dirname "$0")" && pwd)
source "$here/../lib.sh"
rm -rf "$work"; mkdir -p "$work"
command -v ip >/dev/null && command -v unshare >/dev/null && command -v curl >/dev/null \
  || { echo "ip, unshare or curl missing: skipped"; exit 77; }
[[ $(id -u) -eq 0 ]] || { echo "not root: skipped"; exit 77; }
export DPA_NETNS_PREFIX="dpa$$_"
h1=${DPA_NETNS_PREFIX}h1; h2=${DPA_NETNS_PREFIX}h2
cleanup() { ip netns del "$h1" 2>/dev/null; ip netns del "$h2" 2>/dev/null; }
trap cleanup EXIT
if ! { ip netns add "$h1" && ip netns add "$h2" &&
       ip link add "${DPA_NETNS_PREFIX}v1" netns "$h1" type veth peer name "${DPA_NETNS_PREFIX}v2" netns "$h2" &&
       ip -n "$h1" addr add 10.77.0.1/24 dev "${DPA_NETNS_PREFIX}v1" && ip -n "$h2" addr add 10.77.0.2/24 dev "${DPA_NETNS_PREFIX}v2" &&
       ip -n "$h1" link set lo up && ip -n "$h2" link set lo up &&
       ip -n "$h1" link set "${DPA_NETNS_PREFIX}v1" up && ip -n "$h2" link set "${DPA_NETNS_PREFIX}v2" up &&
       ip netns exec "$h2" unshare --uts true; } 2>"$work/netns.err"; then
  echo "cannot make network / UTS namespaces here ($(head -1 "$work/netns.err")): skipped"; exit 77
fi
# The rsh agent: "host" h2 is a shell in h2's namespaces with hostname h2.
cat >"$work/rsh_agent.sh" <<'AGENT'
#!/bin/sh
host=$1; shift
exec ip netns exec "${DPA_NETNS_PREFIX}$host" unshare --uts sh -c "hostname $host; $*"
AGENT
chmod +x "$work/rsh_agent.sh"
printf '%s slots=2\nh2 slots=2\n' "$(hostname)" >"$work/hosts"
"$bin" make-model --preset tiny --output "$work/tiny" --log-level warn >/dev/null || { echo "make-model failed"; exit 1; }

# Rank 0 and 1 in h1 (where mpirun runs), 2 and 3 in h2; every MPI byte over the veth pair.
M="ip netns exec $h1 $M"
MPI_EXTRA="--hostfile $work/hosts --mca plm_rsh_agent $work/rsh_agent.sh --mca pml ob1 --mca btl tcp,self
  --mca btl_tcp_if_include 10.77.0.0/24 --mca oob_tcp_if_include 10.77.0.0/24 -x DPA_NETNS_PREFIX"
$M $MPI_EXTRA -np 4 "$bin" info --device cpu >"$work/info.txt" 2>&1
grep -q "^rank 1/4 host=$(hostname) " "$work/info.txt" && grep -q "^rank 2/4 host=h2 " "$work/info.txt" \
  && grep -q "^rank 3/4 host=h2 " "$work/info.txt" && grep -q "^groups: ok" "$work/info.txt" \
  && ok "ranks 0-1 on the first host, 2-3 on h2; all-to-all in every group exact over TCP" \
  || bad "placement / groups: $(cat "$work/info.txt" | head -8)"
start_server multihost 4 "$work/tiny" --host 10.77.0.1 || { finish; exit 1; }
ok "ready at $url"
c2() { ip netns exec "$h2" curl -s "$@"; }  # a client on the second host
code=$(c2 -o "$work/c.json" -w '%{http_code}' "$url/v1/completions" -H 'Content-Type: application/json' \
  -d '{"model": "tiny", "prompt": [5, 6, 7, 8], "max_tokens": 12, "ignore_eos": true}')
[[ $code == 200 ]] && grep -q '"completion_tokens":12' "$work/c.json" \
  && ok "a completion from the second host: 12 tokens" || bad "completion: $code $(head -c 300 "$work/c.json")"
c2 -N "$url/v1/completions" -H 'Content-Type: application/json' \
  -d '{"model": "tiny", "prompt": [9, 10], "max_tokens": 8, "ignore_eos": true, "stream": true, "n": 4}' >"$work/s.txt"
[[ $(grep -c '"text"' "$work/s.txt") -ge 8 ]] && tail -c 20 "$work/s.txt" | grep -q "data: \[DONE\]" \
  && ok "a stream with n=4 from the second host" || bad "stream: $(tail -c 300 "$work/s.txt")"
code=$(ip netns exec "$h1" curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:${url##*:}/health")
[[ $code == 000 ]] && ok "bound to 10.77.0.1 only (loopback refused)" || bad "loopback /health answered $code"
stop_server
[[ $server_rc -eq 0 ]] && ok "SIGTERM to rank 0 drained all four ranks on both hosts (exit 0)" || { bad "exit $server_rc"; tail -20 "$log"; }
finish
