#!/usr/bin/env bash
# Fault injection (reliability issue): a rank that stops answering mid-run (--test-fault-rank /
# --test-fault-step make it hang, as a wedged GPU or a stuck peer would) must end the whole job
# within the watchdog timeout, with the watchdog's dump of every rank's last step header and a
# non-zero exit, never a hang:
#  1. batch under mpirun -np 2; the output file keeps only whole lines and a rerun completes it;
#  2. serve under mpirun -np 2 with two clients waiting: rank 0 answers both before the job ends,
#     the streaming one with an OpenAI error event and `data: [DONE]`, the other with HTTP 500 and
#     an error body ("the engine stopped ..."), and the job exits non-zero.
#   fault_e2e.sh MPIEXEC DPA_SERVE INPUT_JSONL WORKDIR
set -u
mpiexec=$1; bin=$2; input=$3; work=$4
source "$(cd "$(dirname "$0")" && pwd)/../lib.sh"
rm -rf "$work"; mkdir -p "$work"
"$bin" make-model --preset tiny --output "$work/tiny" --log-level warn >/dev/null || { echo "make-model failed"; exit 1; }
model=(--model "$work/tiny" --device cpu --dp 2 --ep 2 --watchdog-timeout 3)

# 1. batch: rank 1 hangs at step 2.
t0=$(date +%s)
timeout 120 $M -np 2 "$bin" batch "${model[@]}" --no-progress --input "$input" --output "$work/out.jsonl" \
  --test-fault-rank 1 --test-fault-step 2 >"$work/batch.log" 2>&1
rc=$?; dt=$(( $(date +%s) - t0 ))
[[ $rc -ne 0 && $rc -ne 124 ]] && ok "batch with a hung rank exits non-zero ($rc) in ${dt} s" || bad "batch with a hung rank: rc $rc after ${dt} s"
grep -q "watchdog: step .* made no progress" "$work/batch.log" && grep -q "rank 1: step" "$work/batch.log" \
  && ok "the watchdog dumped every rank's last header" || bad "no watchdog dump: $(tail -5 "$work/batch.log")"
/usr/bin/python3 - "$work/out.jsonl" <<'PY' && ok "the interrupted output holds only whole lines" || bad "torn or bad lines in the interrupted output"
import json, sys, os
p = sys.argv[1]
data = open(p).read() if os.path.exists(p) else ""
lines = data.split("\n")
for l in lines[:-1]:
    json.loads(l)
PY
timeout 300 $M -np 2 "$bin" batch --model "$work/tiny" --device cpu --dp 2 --ep 2 --no-progress --input "$input" \
  --output "$work/out.jsonl" >"$work/rerun.log" 2>&1 \
  && [[ $(wc -l <"$work/out.jsonl") -eq $(grep -c . "$input") ]] && ok "a rerun completes the batch" || bad "rerun: $(tail -3 "$work/rerun.log")"

# 2. serve: rank 1 hangs at step 6 while one client streams a long completion and another waits
# for a whole one.
rm -f "$work/ready"
t0=$(date +%s)
timeout 120 $M -np 2 "$bin" serve "${model[@]}" --port 0 --ready-file "$work/ready" --test-fault-rank 1 --test-fault-step 6 \
  >"$work/serve.log" 2>&1 &
spid=$!
for _ in $(seq 600); do [[ -s "$work/ready" ]] && break; sleep 0.1; done
url=$(sed 's/.*url=//' "$work/ready" 2>/dev/null)
if [[ -z $url ]]; then
  bad "serve never became ready: $(tail -5 "$work/serve.log")"
else
  timeout 60 curl -s -o "$work/whole.json" -w '%{http_code}' "$url/v1/completions" -H 'Content-Type: application/json' \
    -d '{"model": "tiny", "prompt": [8, 9], "max_tokens": 200, "ignore_eos": true}' >"$work/whole.code" 2>&1 &
  wpid=$!
  timeout 60 curl -sN "$url/v1/completions" -H 'Content-Type: application/json' \
    -d '{"model": "tiny", "prompt": [5, 6, 7], "max_tokens": 200, "ignore_eos": true, "stream": true}' >"$work/stream.txt" 2>&1
  crc=$?
  wait "$wpid"
  grep -q '"error".*the engine stopped' "$work/stream.txt" && tail -c 20 "$work/stream.txt" | grep -q "data: \[DONE\]" \
    && [[ $crc -eq 0 ]] && ok "the streaming client gets an error event and [DONE]" \
    || bad "stream (rc $crc): $(tail -c 300 "$work/stream.txt")"
  [[ $(cat "$work/whole.code") == 500 ]] && grep -q '"message":"the engine stopped' "$work/whole.json" \
    && ok "the waiting non-streaming client gets HTTP 500 with an error body" \
    || bad "non-streaming client: $(cat "$work/whole.code") $(head -c 300 "$work/whole.json")"
fi
wait "$spid"; rc=$?; dt=$(( $(date +%s) - t0 ))
[[ $rc -ne 0 && $rc -ne 124 ]] && ok "serve with a hung rank exits non-zero ($rc) in ${dt} s" || bad "serve with a hung rank: rc $rc after ${dt} s: $(tail -5 "$work/serve.log")"
grep -q "watchdog: step .* made no progress" "$work/serve.log" && ok "serve: the watchdog fired" || bad "serve: no watchdog dump"

finish
