#!/usr/bin/env bash
# Load and soak on loopback (reliability issue): CLIENTS closed-loop streaming clients
# (perf/bench_serving --duration) for DURATION seconds against `mpirun -np 4 dpa_serve serve
# --device cpu` on the tiny model. Records the ranks' resident memory every 10 s, then drains the
# server (SIGTERM to rank 0: the engine checks its KV accounting on the way out, a broken one is a
# non-zero exit). Pass: no failed request (explicit 429s allowed), resident memory at the end
# within 5% of the level after warm-up (the first minute), recovery from a storm of CLIENTS
# disconnects at the end (every request aborted, every KV page free), and the server exits 0.
#   perf/soak.sh [--clients 1000] [--duration 600] [--np 4] [--out DIR] [--build build]
set -u
clients=1000; duration=600; np=4; out=soak_out; build=build
while [[ $# -gt 0 ]]; do
  case $1 in
    --clients) clients=$2; shift 2 ;;
    --duration) duration=$2; shift 2 ;;
    --np) np=$2; shift 2 ;;
    --out) out=$2; shift 2 ;;
    --build) build=$2; shift 2 ;;
    *) echo "usage: perf/soak.sh [--clients N] [--duration S] [--np N] [--out DIR] [--build DIR]"; exit 2 ;;
  esac
done
here=$(cd "$(dirname "$0")/.." && pwd)
mpiexec=$(command -v mpiexec); bin=$build/dpa_serve; client=$build/perf/bench_serving
mkdir -p "$out"; work=$(mktemp -d)
source "$here/tests/lib.sh"
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)"
"$bin" make-model --preset tiny --output "$work/tiny" --log-level warn >/dev/null || { echo "make-model failed"; exit 1; }
start_server soak "$np" "$work/tiny" --log-level warn || exit 1
echo "server $url, $np ranks; $clients clients for $duration s"

# Resident memory (kB) summed over the ranks, every 10 s: "seconds,kB".
rss_total() { local t=0 p; for p in $(rank_pids); do t=$((t + $(awk '/^VmRSS/ {print $2}' /proc/$p/status 2>/dev/null || echo 0))); done; echo "$t"; }
t0=$(date +%s)
( while kill -0 "$mpirun_pid" 2>/dev/null; do echo "$(( $(date +%s) - t0 )),$(rss_total)"; sleep 10; done ) >"$out/rss.csv" &
sampler=$!

"$client" --base-url "$url" --max-concurrency "$clients" --duration "$duration" --num-prompts 256 \
  --random-input-len 64 --random-output-len 64 --random-range-ratio 0.25 --result-json "$out/soak.json" \
  >"$out/client.txt" 2>&1
client_rc=$?
curl -s "$url/metrics" >"$out/metrics.txt"
curl -s "$url/get_load" >"$out/load.json"
# Then a storm: as many clients on long streams, all disconnected at once.
if disconnect_storm "$client" "$clients"; then
  ok "disconnect storm: $storm_streams streams cut at once, every request and KV page freed in $storm_ms ms"
else
  bad "the server did not recover from a storm of $clients disconnects"
fi
stop_server
kill "$sampler" 2>/dev/null; wait "$sampler" 2>/dev/null
cp "$log" "$out/server.log"

grep -E "Successful|Rejected|Failed requests|duration|Output token throughput|Mean TTFT|P99 TTFT|Mean TPOT" "$out/client.txt"
warm=$(awk -F, '$1 >= 60 {print $2; exit}' "$out/rss.csv"); end=$(tail -1 "$out/rss.csv" | cut -d, -f2)
peak=$(cut -d, -f2 "$out/rss.csv" | sort -n | tail -1)
growth=$(awk -v a="${warm:-0}" -v b="${end:-0}" 'BEGIN { if (a > 0) printf "%.1f", 100 * (b - a) / a; else print "n/a" }')
echo "resident memory, all ranks: ${warm:-?} kB after warm-up, ${end:-?} kB at the end (${growth}%), peak ${peak:-?} kB"
echo "client exit $client_rc, server exit $server_rc"
[[ $client_rc -eq 0 ]] && ok "no failed request" || bad "the client saw failures (exit $client_rc)"
[[ $server_rc -eq 0 ]] && ok "server drained and exited 0 (KV accounting checked)" || bad "server exit $server_rc"
awk -v g="$growth" 'BEGIN { exit !(g != "n/a" && g + 0 <= 5) }' && ok "memory flat (${growth}% <= 5%)" || bad "memory grew ${growth}%"
rm -rf "$work"
finish
