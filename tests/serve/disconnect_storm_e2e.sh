#!/usr/bin/env bash
# A storm of disconnects (reliability issue): N streaming clients (200) on long completions against
# `mpirun -np 2 serve --device cpu` (dp 2); once all of them stream, the client process is killed
# and every socket closes at once. Every request must be aborted and every KV page freed (seen on
# /get_load), the server must still answer a completion, and SIGTERM must drain it (exit 0, with
# the engine's KV accounting check).
#   disconnect_storm_e2e.sh MPIEXEC DPA_SERVE BENCH_SERVING WORKDIR [N]
set -u
mpiexec=$1; bin=$2; client=$3; work=$4; n=${5:-200}
source "$(cd "$(dirname "$0")" && pwd)/../lib.sh"
rm -rf "$work"; mkdir -p "$work"
command -v curl >/dev/null || { echo "curl is not installed: skipped"; exit 77; }
"$bin" make-model --preset tiny --output "$work/tiny" --log-level warn >/dev/null || { echo "make-model failed"; exit 1; }
start_server storm 2 "$work/tiny" --log-level warn --max-num-seqs 512 || { finish; exit 1; }
if disconnect_storm "$client" "$n"; then
  ok "$storm_streams streams cut at once: every request aborted and every KV page free after $storm_ms ms"
else
  bad "the server did not recover from $n disconnects"
fi
code=$(curl -s -o "$work/after.json" -w '%{http_code}' "$url/v1/completions" -H 'Content-Type: application/json' \
  -d '{"model": "tiny", "prompt": [5, 6, 7], "max_tokens": 4, "ignore_eos": true}')
[[ $code == 200 ]] && ok "a completion after the storm" || bad "after the storm: $code $(head -c 200 "$work/after.json")"
stop_server
[[ $server_rc -eq 0 ]] && ok "drained, exit 0" || { bad "server exit $server_rc"; tail -20 "$log"; }
finish
