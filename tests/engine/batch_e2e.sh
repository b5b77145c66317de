#!/usr/bin/env bash
# Engine acceptance on the CPU (issue 4), against a tiny random checkpoint made by make-model:
#  1. one batch file gives identical greedy token ids under (W, dp, ep) = (1,1,1), (2,2,2),
#     (4,2,4), (4,4,4), and again with a KV cache small enough that preemption happens;
#  2. fewer requests than replicas, and one replica with many requests;
#  3. a batch killed with SIGKILL mid-run and rerun yields every custom_id exactly once, with the
#     same outputs as an uninterrupted run (a torn last line included);
#  4. bench prints the block and the JSON line; --profile-phases the phases, the decode step's
#     floor and the coarse split; --trace writes the per-step HDF5 trace;
#  5. bad lines among good ones each get an error line, and a rerun resumes over them;
#  6. logit_bias moves greedy picks, on one rank and across two replicas;
#  7. grammar-constrained lines (guided_grammar, ebnf, structured_outputs grammar) on both replicas
#     give strings of their grammars (tests/serve/grammar_check.py), a bad grammar's line is a 400.
# The engine itself checks at exit that every replica's free + used KV pages equal the total and
# that no page is still held (it aborts the job otherwise), so every run below checks that too.
#   batch_e2e.sh MPIEXEC DPA_SERVE INPUT_JSONL WORKDIR
set -u
mpiexec=$1; bin=$2; input=$3; work=$4
py=/usr/bin/python3
source "$(cd "$(dirname "$0")" && pwd)/../lib.sh"
rm -rf "$work"; mkdir -p "$work"

"$bin" make-model --preset tiny --output "$work/tiny" --log-level warn >/dev/null || { echo "make-model failed"; exit 1; }
model=(--model "$work/tiny" --device cpu --no-progress)


run_batch() {  # run_batch NAME NP ARGS...
  local name=$1 np=$2; shift 2
  local level=warn; [[ " $* " == *" --log-level "* ]] || set -- "$@" --log-level "$level"
  timeout 600 $M -np "$np" "$bin" batch "${model[@]}" --input "$input" --output "$work/$name.jsonl" "$@" \
    >"$work/$name.log" 2>&1
}

run_batch ref 1 --dp 1 --ep 1 || bad "reference run (1,1,1) failed: $(tail -3 "$work/ref.log")"
ref=$(batch_canon "$work/ref.jsonl")
n_ok=$(grep -c '"status_code":200' "$work/ref.jsonl")
[[ $n_ok -ge 20 ]] && ok "reference: $n_ok successful lines" || bad "reference has only $n_ok successful lines"
for layout in "2 2 2" "4 2 4" "4 4 4"; do
  set -- $layout
  name="w$1_dp$2_ep$3"
  if run_batch "$name" "$1" --dp "$2" --ep "$3"; then
    [[ $(batch_canon "$work/$name.jsonl") == "$ref" ]] && ok "$name matches (1,1,1)" || bad "$name differs from (1,1,1)"
  else
    bad "$name failed: $(tail -3 "$work/$name.log")"
  fi
done
# The padded EP exchange (every step of up to 512 tokens a rank; only the decode steps with 16),
# attention sliced in the first: the same tokens.
for v in "4 2 4 512" "2 2 2 16"; do
  set -- $v
  name="w$1_dp$2_ep$3_padded$4"
  if run_batch "$name" "$1" --dp "$2" --ep "$3" --ep-exchange padded --cuda-graph-max-bs "$4"; then
    [[ $(batch_canon "$work/$name.jsonl") == "$ref" ]] && ok "$name matches (1,1,1)" || bad "$name differs from (1,1,1)"
  else
    bad "$name failed: $(tail -3 "$work/$name.log")"
  fi
done
# The two-batch overlap over the padded exchange (every padded step of two tokens or more a rank
# split in two): the same tokens.
name="w2_dp2_ep2_tbo"
if run_batch "$name" 2 --dp 2 --ep 2 --ep-exchange padded --enable-two-batch-overlap --tbo-min-tokens 2; then
  [[ $(batch_canon "$work/$name.jsonl") == "$ref" ]] && ok "$name matches (1,1,1)" || bad "$name differs from (1,1,1)"
else
  bad "$name failed: $(tail -3 "$work/$name.log")"
fi
# The overlap scheduler (on by default) against --disable-overlap-schedule: greedy requests, seeded
# sampling with logprobs, penalties (those steps run one at a time), min_tokens, and stop ids that
# end sequences whose next step is already running give the same tokens, logprobs and finish
# reasons, on one rank and on two. On an f32 model: a bf16 one rounds its experts' results, which
# turns the last-bit differences between differently composed batches (the overlap changes when
# lines join) into bf16 steps that can flip a seeded draw; the schedule is what is compared here.
"$bin" make-model --preset tiny --dtype f32 --output "$work/tiny32" --log-level warn >/dev/null \
  || { echo "make-model --dtype f32 failed"; exit 1; }
model32=(--model "$work/tiny32" --device cpu --no-progress)
$py - "$work/mixed_a.jsonl" <<'PY'
import json, sys
with open(sys.argv[1], "w") as f:
    for i in range(16):
        body = {"prompt": [100 + 13 * i + k for k in range(5 + i % 7)], "max_tokens": 16, "temperature": 0}
        f.write(json.dumps({"custom_id": f"m{i:02d}", "method": "POST", "url": "/v1/completions", "body": body}) + "\n")
PY
timeout 600 $M -np 1 "$bin" batch "${model32[@]}" --log-level warn --input "$work/mixed_a.jsonl" --output "$work/mixed_a_out.jsonl" \
  --disable-overlap-schedule >"$work/mixed_a.log" 2>&1 || bad "mixed batch, first pass: $(tail -3 "$work/mixed_a.log")"
$py - "$work/mixed_a.jsonl" "$work/mixed_a_out.jsonl" "$work/mixed.jsonl" <<'PY'
import json, sys
ins = [json.loads(l) for l in open(sys.argv[1])]
ids = {}
for l in open(sys.argv[2]):
    o = json.loads(l)
    ids[o["custom_id"]] = o["response"]["body"]["choices"][0]["token_ids"]
with open(sys.argv[3], "w") as f:
    for i, line in enumerate(ins):
        b = line["body"]
        t = ids[line["custom_id"]]
        if i % 4 == 0: b["stop_token_ids"] = [t[2]]                    # stops by its third token
        if i % 4 == 1: b.update(temperature=0.8, seed=1000 + i, logprobs=2)
        if i % 4 == 2: b.update(repetition_penalty=1.3, presence_penalty=0.5, max_tokens=3)  # short: they hold the overlap
        if i % 4 == 3: b.update(stop_token_ids=[t[3]], min_tokens=2)      # suppressed for two, then its fourth
        f.write(json.dumps(line) + "\n")
PY
# mixed_same A B: the same token ids and finish reasons per custom_id, logprobs within 1e-4 (a
# wasted row of a sequence that stopped changes the next step's batch, and the sums' order).
mixed_same() { $py - "$1" "$2" <<'PY'
import json, sys
def load(f):
    rows = {}
    for l in open(f):
        o = json.loads(l)
        c = o["response"]["body"]["choices"][0]
        rows[o["custom_id"]] = (c["token_ids"], c["finish_reason"], (c.get("logprobs") or {}).get("token_logprobs") or [])
    return rows
a, b = load(sys.argv[1]), load(sys.argv[2])
ok = a.keys() == b.keys() and all(
    a[k][:2] == b[k][:2] and len(a[k][2]) == len(b[k][2]) and all(abs(x - y) <= 1e-4 for x, y in zip(a[k][2], b[k][2]))
    for k in a)
sys.exit(0 if ok else 1)
PY
}
# Decode steps overlap where the model queues them whole: the fixed-capacity experts (ep 1) or the
# padded exchange; the CPU backend runs each launch to its end, but the engine's order is the same.
for v in "sync 1 --disable-overlap-schedule" "overlap 1" "sync_w2 2 --disable-overlap-schedule" "overlap_w2 2"; do
  set -- $v
  name=mixed_$1 np=$2; shift 2
  [[ $np == 2 ]] && set -- "$@" --dp 2 --ep 2 --ep-exchange padded
  DPA_MOE_FIXED_TOKENS=64 timeout 600 $M -np "$np" -x DPA_MOE_FIXED_TOKENS "$bin" batch "${model32[@]}" --log-level info \
    --input "$work/mixed.jsonl" --output "$work/$name.jsonl" "$@" >"$work/$name.log" 2>&1 \
    || bad "$name failed: $(tail -3 "$work/$name.log")"
done
stops=$(grep -o '"finish_reason": *"stop"' "$work/mixed_sync.jsonl" | wc -l)
[[ $stops -ge 8 ]] && ok "mixed batch: $stops sequences end on a stop id" || bad "mixed batch: only $stops stops"
for w in "" _w2; do
  n_on=$(grep -o "[0-9]* decode steps overlapped" "$work/mixed_overlap$w.log" | awk '{print $1}')
  n_off=$(grep -o "[0-9]* decode steps overlapped" "$work/mixed_sync$w.log" | awk '{print $1}')
  [[ ${n_on:-0} -ge 5 && ${n_off:-x} == 0 ]] && ok "mixed$w: $n_on decode steps overlapped (0 with the flag)" \
    || bad "mixed$w: overlapped steps '$n_on', with --disable-overlap-schedule '$n_off'"
  mixed_same "$work/mixed_overlap$w.jsonl" "$work/mixed_sync$w.jsonl" \
    && ok "mixed_overlap$w matches --disable-overlap-schedule" || bad "mixed_overlap$w differs from --disable-overlap-schedule"
done
# min_tokens alone (no penalties) needs only the count of tokens drawn, so its rows overlap: every
# line suppressed to its last token, greedy and seeded sampling with logprobs.
$py - "$work/mixed_a.jsonl" "$work/mintok.jsonl" <<'PY'
import json, sys
with open(sys.argv[2], "w") as f:
    for i, l in enumerate(open(sys.argv[1])):
        line = json.loads(l)
        line["body"]["min_tokens"] = line["body"]["max_tokens"]
        if i % 2: line["body"].update(temperature=0.8, seed=2000 + i, logprobs=1)
        f.write(json.dumps(line) + "\n")
PY
for v in "mintok_sync --disable-overlap-schedule" "mintok_overlap"; do
  set -- $v
  name=$1; shift
  DPA_MOE_FIXED_TOKENS=64 timeout 600 $M -np 1 -x DPA_MOE_FIXED_TOKENS "$bin" batch "${model32[@]}" --log-level info \
    --input "$work/mintok.jsonl" --output "$work/$name.jsonl" "$@" >"$work/$name.log" 2>&1 \
    || bad "$name failed: $(tail -3 "$work/$name.log")"
done
n_on=$(grep -o "[0-9]* decode steps overlapped" "$work/mintok_overlap.log" | awk '{print $1}')
n_len=$(grep -o '"finish_reason": *"length"' "$work/mintok_overlap.jsonl" | wc -l)
[[ ${n_on:-0} -ge 10 && $n_len -eq 16 ]] && ok "min_tokens: $n_on decode steps overlapped, 16 lines to max_tokens" \
  || bad "min_tokens: overlapped steps '$n_on', $n_len of 16 lines to max_tokens"
mixed_same "$work/mintok_overlap.jsonl" "$work/mintok_sync.jsonl" \
  && ok "min_tokens overlap matches --disable-overlap-schedule" || bad "min_tokens overlap differs from --disable-overlap-schedule"
# Whether the lines a batch output ($1) answered, at least 15 (a tiny KV cache refuses the lines
# too long for it), have the reference's token ids.
answered_like_ref() {
  $py - "$work/ref.jsonl" "$1" <<'PY'
import json, sys
def load(p):
    d = {}
    for l in open(p):
        o = json.loads(l); r = o.get("response")
        if r and r["status_code"] == 200: d[o["custom_id"]] = [c["token_ids"] for c in r["body"]["choices"]]
    return d
a, b = load(sys.argv[1]), load(sys.argv[2])
assert len(b) >= 15, len(b)
assert all(a[k] == v for k, v in b.items())
PY
}
# Preemption: 12 pages of 8 tokens per replica cannot hold the batch at once.
if run_batch preempt 2 --dp 2 --ep 2 --page-size 8 --max-total-tokens 96 --max-model-len 96 --log-level info; then
  np=$(grep -o 'preemptions=[0-9]*' "$work/preempt.log" | head -1 | cut -d= -f2)
  [[ ${np:-0} -gt 0 ]] && ok "preemption happened ($np)" || bad "no preemption with a tiny KV cache"
  # Lines too long for 96 tokens become errors there; every other line must match the reference.
  answered_like_ref "$work/preempt.jsonl" && ok "preempted run matches the reference" || bad "preempted run differs"
else
  bad "preemption run failed: $(tail -3 "$work/preempt.log")"
fi

# Fewer requests than replicas; then one replica (dp 1 of 4 ranks) with every request.
head -1 "$input" > "$work/one.jsonl"
timeout 300 $M -np 4 "$bin" batch "${model[@]}" --log-level warn --dp 4 --input "$work/one.jsonl" --output "$work/one_out.jsonl" >"$work/one.log" 2>&1 \
  && [[ $(wc -l <"$work/one_out.jsonl") -eq 1 ]] && ok "one request, four replicas" || bad "one request on four replicas: $(tail -3 "$work/one.log")"
# An output file holding nothing but a torn line (a run killed before its first line was whole):
# cut, not appended to.
printf '{"id":"batch_req_torn","custom_id":"x' >"$work/torn_only.jsonl"
timeout 300 $M -np 1 "$bin" batch "${model[@]}" --log-level warn --input "$work/one.jsonl" --output "$work/torn_only.jsonl" >"$work/torn_only.log" 2>&1 \
  && $py -c 'import json, sys; l = open(sys.argv[1]).read().splitlines(); assert len(l) == 1; json.loads(l[0])' "$work/torn_only.jsonl" \
  && ok "an output of one torn line is cut, not appended to" || bad "torn-only output: $(head -c 200 "$work/torn_only.jsonl")"
if run_batch dp1 4 --dp 1 --ep 4; then
  [[ $(batch_canon "$work/dp1.jsonl") == "$ref" ]] && ok "one replica (attn_tp 4) matches" || bad "dp 1 of 4 ranks differs"
else
  bad "dp 1 of 4 ranks failed: $(tail -3 "$work/dp1.log")"
fi

# --scheduling-policy: the order of admission and the preemption victim change, never what a greedy
# or seeded line answers. Every generation line gets a priority in -2..2; on a replica of one rank and on
# replicas of two (their ranks must agree on every batch), and with preemption (victims by priority).
$py - "$input" "$work/prio_in.jsonl" <<'PY'
import json, sys
with open(sys.argv[2], "w") as out:
    for i, l in enumerate(open(sys.argv[1])):
        try:
            o = json.loads(l)
        except ValueError:  # the sample's bad lines stay as they are
            out.write(l if l.endswith("\n") else l + "\n"); continue
        if isinstance(o.get("body"), dict) and str(o.get("url")).endswith("completions"):
            o["body"]["priority"] = (i * 7) % 5 - 2
        out.write(json.dumps(o) + "\n")
PY
timeout 300 $M -np 1 "$bin" batch "${model[@]}" --log-level warn --input "$work/prio_in.jsonl" --output "$work/prio_fcfs.jsonl" >"$work/prio_fcfs.log" 2>&1 \
  && $py - "$work/prio_in.jsonl" "$work/prio_fcfs.jsonl" "$work/ref.jsonl" <<'PY' && ok "priority under fcfs: a 400 naming the field and the flag" || bad "priority under fcfs"
import json, sys
prio = {}
for l in open(sys.argv[1]):
    try:
        o = json.loads(l)
        prio[o["custom_id"]] = o["body"].get("priority", 0)
    except (ValueError, KeyError, AttributeError):
        pass
# The lines the reference answered (the others fail for their own reasons first).
good = {o["custom_id"] for o in map(json.loads, open(sys.argv[3])) if (o.get("response") or {}).get("status_code") == 200}
n = 0
for o in map(json.loads, open(sys.argv[2])):
    if prio.get(o["custom_id"], 0) == 0 or o["custom_id"] not in good: continue
    r = o["response"]; n += 1
    assert r["status_code"] == 400 and r["body"]["error"]["param"] == "priority", o
    assert "--scheduling-policy priority" in r["body"]["error"]["message"], o
assert n == sum(p != 0 and k in good for k, p in prio.items()) and n > 0, n
PY
for run in "priority 2 2 2" "priority 2 1 2" "lpm 2 2 2" "lpm 2 1 2"; do
  set -- $run
  name="policy_$1_dp$3_ep$4"
  in="$work/prio_in.jsonl"; [[ $1 == lpm ]] && in=$input  # priorities are refused under lpm
  if input=$in run_batch "$name" "$2" --dp "$3" --ep "$4" --scheduling-policy "$1"; then
    [[ $(batch_canon "$work/$name.jsonl") == "$ref" ]] && ok "--scheduling-policy $1, dp $3 ep $4 matches the reference" \
      || bad "--scheduling-policy $1, dp $3 ep $4 differs from the reference"
  else
    bad "--scheduling-policy $1, dp $3 ep $4 failed: $(tail -3 "$work/$name.log")"
  fi
done
if input="$work/prio_in.jsonl" run_batch prio_preempt 2 --dp 1 --ep 2 --page-size 8 --max-total-tokens 96 --max-model-len 96 \
     --scheduling-policy priority --log-level info; then
  np=$(grep -o 'preemptions=[0-9]*' "$work/prio_preempt.log" | head -1 | cut -d= -f2)
  answered_like_ref "$work/prio_preempt.jsonl" && [[ ${np:-0} -gt 0 ]] \
    && ok "priority with preemption ($np) matches the reference" || bad "priority with preemption (${np:-0}) differs"
else
  bad "priority with preemption failed: $(tail -3 "$work/prio_preempt.log")"
fi

# SIGKILL mid-run, then resume: a longer file of token-id prompts.
$py - "$work/many.jsonl" <<'PY'
import json, sys
with open(sys.argv[1], "w") as f:
    for i in range(120):
        f.write(json.dumps({"custom_id": f"r{i}", "method": "POST", "url": "/v1/completions",
                            "body": {"prompt": [(i * 7919 + k * 104729) % 120000 + 10 for k in range(6 + i % 9)],
                                     "max_tokens": 24, "temperature": 0, "ignore_eos": True}}) + "\n")
PY
many=(--input "$work/many.jsonl" --max-num-seqs 4 --log-level warn)
timeout 600 $M -np 2 "$bin" batch "${model[@]}" "${many[@]}" --output "$work/full.jsonl" >"$work/full.log" 2>&1 || bad "uninterrupted run failed"
setsid $M -np 2 "$bin" batch "${model[@]}" "${many[@]}" --output "$work/killed.jsonl" >"$work/killed.log" 2>&1 &
pid=$!
for _ in $(seq 1800); do [[ -f "$work/killed.jsonl" && $(wc -l <"$work/killed.jsonl") -ge 20 ]] && break; sleep 0.1; done
kill -KILL -- -"$pid" 2>/dev/null; wait "$pid" 2>/dev/null
# Ranks outside mpirun's process group die too, and nothing writes the file any more before the
# torn line is appended (a late writer would interleave with it).
for _ in $(seq 100); do
  pkill -KILL -f "batch.*killed.jsonl" 2>/dev/null || break
  sleep 0.1
done
before=$(wc -l <"$work/killed.jsonl" 2>/dev/null || echo 0)
printf '{"id":"batch_req_torn","custom_id":"r9' >>"$work/killed.jsonl"  # a torn last line
timeout 600 $M -np 2 "$bin" batch "${model[@]}" "${many[@]}" --output "$work/killed.jsonl" >"$work/resume.log" 2>&1 || bad "resume run failed: $(tail -5 "$work/resume.log")"
$py - "$work/full.jsonl" "$work/killed.jsonl" <<'PY' && ok "killed after $before lines and resumed: every custom_id once, outputs equal" || bad "resume lost or duplicated lines"
import json, sys
full = [json.loads(l) for l in open(sys.argv[1])]
got = [json.loads(l) for l in open(sys.argv[2])]
ids = [o["custom_id"] for o in got]
assert len(ids) == len(set(ids)) == 120, (len(ids), len(set(ids)))
f = {o["custom_id"]: o["response"]["body"]["choices"][0]["token_ids"] for o in full}
g = {o["custom_id"]: o["response"]["body"]["choices"][0]["token_ids"] for o in got}
assert f == g
PY
[[ $before -lt 120 ]] || bad "the kill came too late to test anything ($before lines)"

# Bench: the block and the JSON line.
out=$(timeout 300 $M -np 2 "$bin" bench --model "$work/tiny" --device cpu --log-level warn --num-prompts 6 --random-input-len 16 --random-output-len 8 2>&1)
if grep -q "Output token throughput (tok/s):" <<<"$out" && grep -q "P99 ITL (ms):" <<<"$out" && grep -q '^{"backend":"dpa_serve' <<<"$out" \
   && grep -q '"total_output_tokens":48' <<<"$out"; then ok "bench block and JSON line"; else bad "bench output: $out"; fi

# Penalties on every request (the engine keeps each sequence's edits as it grows); an out-of-range
# penalty is refused before anything runs.
out=$(timeout 300 $M -np 2 "$bin" bench --model "$work/tiny" --device cpu --log-level warn --num-prompts 6 --random-input-len 16 \
      --random-output-len 8 --temperature 0.8 --repetition-penalty 1.25 --frequency-penalty 0.5 --presence-penalty 0.2 2>&1)
if grep -q '"total_output_tokens":48' <<<"$out" && grep -q '"repetition_penalty":1.25' <<<"$out"; then ok "bench with penalties"
else bad "bench with penalties: $out"; fi
out=$(timeout 60 "$bin" bench --model "$work/tiny" --device cpu --num-prompts 2 --frequency-penalty 3 2>&1) && bad "frequency penalty 3 accepted"
grep -q "frequency-penalty: must be in \[-2, 2\]" <<<"$out" && ok "bench refuses a penalty out of range" || bad "bench penalty error: $out"

# --profile-phases (dp 2, ep 2): phase times, the decode step's floor, and the coarse split in
# which the MoE exchanges count as all-to-all.
out=$(timeout 300 $M -np 2 "$bin" bench --model "$work/tiny" --device cpu --log-level warn --dp 2 --ep 2 --num-prompts 6 \
  --random-input-len 16 --random-output-len 8 --profile-phases 2>&1)
a2a=$(grep -A40 "decode steps:" <<<"$out" | grep -oE "all-to-all [0-9]+\.[0-9]+ ms" | head -1)
if grep -q "moe.dispatch" <<<"$out" && grep -qE "floor: [0-9.]+ GB of weights touched \+ KV read per step at [0-9]+ GB/s" <<<"$out" \
   && [[ -n $a2a && $a2a != "all-to-all 0.000 ms" ]]; then ok "bench --profile-phases: phases, floor, coarse split"
else bad "bench --profile-phases output: $out"; fi

# Bench trace: every token fed appears once in /tokens (96 prompt tokens + 6 x 7 decode tokens),
# and the routed slots of an MoE layer sum to the tokens times top-k (tiny: top-2).
rm -f "$work/trace.h5"
timeout 300 $M -np 2 "$bin" bench --model "$work/tiny" --device cpu --log-level warn --dp 2 --ep 2 --num-prompts 6 \
  --random-input-len 16 --random-output-len 8 --trace "$work/trace.h5" >/dev/null 2>&1
sum_ds() { h5dump -d "$2" -w 0 "$1" 2>/dev/null | sed -n '/DATA {/,/}/p' | sed 's/([0-9,]*)://g' | tr -c '0-9\n' ' ' \
  | awk '{for (i = 1; i <= NF; i++) s += $i} END {print s + 0}'; }
if [[ -f "$work/trace.h5" ]] && [[ $(sum_ds "$work/trace.h5" /tokens) -eq 138 ]] && [[ $(sum_ds "$work/trace.h5" /expert_tokens) -eq $((138 * 2 * 2)) ]] \
   && h5ls "$work/trace.h5" | grep -q "kv_used_pages"; then ok "bench --trace writes the per-step HDF5 trace"
else bad "bench trace: $(h5ls "$work/trace.h5" 2>&1) tokens=$(sum_ds "$work/trace.h5" /tokens) experts=$(sum_ds "$work/trace.h5" /expert_tokens)"; fi
# The same with the fixed-capacity experts (one rank: every expert local), whose counts stay in
# backend memory until the step's statistics ask for them.
rm -f "$work/trace1.h5"
DPA_MOE_FIXED_TOKENS=4096 timeout 300 $M -np 1 -x DPA_MOE_FIXED_TOKENS "$bin" bench --model "$work/tiny" --device cpu \
  --log-level warn --num-prompts 6 --random-input-len 16 --random-output-len 8 --trace "$work/trace1.h5" >/dev/null 2>&1
if [[ -f "$work/trace1.h5" ]] && [[ $(sum_ds "$work/trace1.h5" /tokens) -eq 138 ]] \
   && [[ $(sum_ds "$work/trace1.h5" /expert_tokens) -eq $((138 * 2 * 2)) ]]; then ok "bench --trace with DPA_MOE_FIXED_TOKENS: expert counts"
else bad "fixed-capacity trace: tokens=$(sum_ds "$work/trace1.h5" /tokens) experts=$(sum_ds "$work/trace1.h5" /expert_tokens)"; fi

# 5. Bad lines among good ones: each gets an error line of its own (in input order) and the good
# lines still run; every line written is strict JSON, so a rerun resumes over the file (a custom_id
# beyond double range once aborted the runner, and would have written a line no parser reads).
$py - "$work/bad_in.jsonl" <<'PY'
import json, sys
good = lambda cid: json.dumps({"custom_id": cid, "method": "POST", "url": "/v1/completions",
                               "body": {"prompt": "Hello there", "max_tokens": 4, "temperature": 0}})
lines = [good("g0"), "not json at all", "[1, 2, 3]",
         '{"method": "POST", "url": "/v1/completions", "body": {}}',
         '{"custom_id": 554555555545e55555, "url": "/v1/completions", "body": {}}',
         '{"custom_id": [1e99999, "x"], "url": "/v1/completions", "body": {}}',
         '{"custom_id": 7, "url": "/v1/completions", "body": {}}', good("g1"),
         '{"custom_id": "m", "method": "GET", "url": "/v1/completions", "body": {}}',
         '{"custom_id": "u", "url": "/v1/embeddings", "body": {}}',
         '{"custom_id": "b", "url": "/v1/completions", "body": "prompt"}',
         '{"custom_id": "p", "url": "/v1/completions", "body": {"prompt": "x", "max_tokens": -3}}', good("g2")]
open(sys.argv[1], "w").write("\n".join(lines) + "\n")
PY
check_bad_out() { $py - "$1" <<'PY'
import json, sys
def strict(c): raise ValueError("non-standard JSON constant " + c)
rows = [json.loads(l, parse_constant=strict) for l in open(sys.argv[1])]
want = [200, "invalid_json", "invalid_json", "invalid_request", "invalid_request", "invalid_request", "invalid_request",
        200, "invalid_request", "invalid_url", "invalid_request", 400, 200]
got = [(o["response"]["status_code"] if o["response"] else o["error"]["code"]) for o in rows]
assert got == want, got
assert [o["id"] for o in rows] == ["batch_req_%d" % i for i in range(len(want))], [o["id"] for o in rows]
assert [o["custom_id"] for o in rows[3:7]] == [None, None, None, 7], [o["custom_id"] for o in rows[3:7]]
PY
}
if timeout 300 $M -np 1 "$bin" batch "${model[@]}" --log-level warn --input "$work/bad_in.jsonl" --output "$work/bad_out.jsonl" \
     >"$work/bad.log" 2>&1 && check_bad_out "$work/bad_out.jsonl" >>"$work/bad.log" 2>&1; then
  ok "bad batch lines: an error line each, the good lines answered, every line strict JSON"
else bad "bad batch lines: $(tail -5 "$work/bad.log")"; fi
if timeout 300 $M -np 1 "$bin" batch "${model[@]}" --log-level info --input "$work/bad_in.jsonl" --output "$work/bad_out.jsonl" \
     >"$work/bad_rerun.log" 2>&1 && grep -q "13 skipped" "$work/bad_rerun.log" && [[ $(wc -l <"$work/bad_out.jsonl") -eq 13 ]]; then
  ok "a rerun resumes over a file with error lines and writes none of them again"
else bad "rerun over error lines: $(tail -3 "$work/bad_rerun.log")"; fi

# 6. logit_bias: +100 on one id makes a greedy request emit only that id, on one rank and across
# two replicas (the bias travels to the other rank in the step messages); -100 on the id a greedy
# request emitted first moves it off that id.
for w in 1 2; do $py - "$work/bias_in$w.jsonl" "$w" <<'PY'
import json, sys
with open(sys.argv[1], "w") as f:
    for i, (t, b) in enumerate([(100, 100), (101, 100), (257, 100), (100, 100)]):
        body = {"prompt": f"Tell me {i}", "max_tokens": 5, "temperature": 0, "ignore_eos": True,
                "logit_bias": {str(t): b}}
        if sys.argv[2] == "2": body["data_parallel_rank"] = i % 2  # half of them on the other rank
        f.write(json.dumps({"custom_id": f"b{i}", "url": "/v1/completions", "body": body}) + "\n")
    f.write(json.dumps({"custom_id": "free", "url": "/v1/completions",
                        "body": {"prompt": "Tell me 0", "max_tokens": 1, "temperature": 0}}) + "\n")
PY
done
check_bias() { $py - "$1" <<'PY'
import json, sys
want = {"b0": 100, "b1": 101, "b2": 257, "b3": 100}
for line in open(sys.argv[1]):
    o = json.loads(line)
    if o["custom_id"] in want:
        ids = o["response"]["body"]["choices"][0]["token_ids"]
        assert ids == [want[o["custom_id"]]] * 5, (o["custom_id"], ids)
PY
}
for np_dp in "1 1" "2 2"; do set -- $np_dp
  if timeout 300 $M -np "$1" "$bin" batch "${model[@]}" --log-level warn --dp "$2" --ep "$2" --input "$work/bias_in$1.jsonl" \
       --output "$work/bias_out$1.jsonl" >"$work/bias$1.log" 2>&1 && check_bias "$work/bias_out$1.jsonl" >>"$work/bias$1.log" 2>&1; then
    ok "logit_bias +100 forces its id (W=$1, dp $2)"
  else bad "logit_bias (W=$1): $(tail -5 "$work/bias$1.log")"; fi
done
first=$($py -c 'import json,sys
for l in open(sys.argv[1]):
    o = json.loads(l)
    if o["custom_id"] == "free": print(o["response"]["body"]["choices"][0]["token_ids"][0])' "$work/bias_out1.jsonl")
printf '%s\n' "{\"custom_id\":\"ban\",\"url\":\"/v1/completions\",\"body\":{\"prompt\":\"Tell me 0\",\"max_tokens\":1,\"temperature\":0,\"logit_bias\":{\"$first\":-100}}}" \
  >"$work/ban_in.jsonl"
if [[ -n $first ]] && timeout 300 $M -np 1 "$bin" batch "${model[@]}" --log-level warn --input "$work/ban_in.jsonl" \
     --output "$work/ban_out.jsonl" >"$work/ban.log" 2>&1 \
   && ! grep -q "\"token_ids\":\[$first\]" "$work/ban_out.jsonl" && grep -q '"token_ids":\[' "$work/ban_out.jsonl"; then
  ok "logit_bias -100 moves a greedy request off its first choice ($first)"
else bad "logit_bias -100 on $first: $(cat "$work/ban_out.jsonl" 2>/dev/null | head -c 300) $(tail -3 "$work/ban.log")"; fi

# 7. Grammars across two replicas (the grammar's text travels in the step messages; each rank
# compiles it): sampled answers that stopped are strings of their grammar, cut ones the start of
# one; the line with a bad grammar gets a 400 naming what and where, the others run.
$py - "$work/grammar_in.jsonl" <<'PY'
import json, sys
brackets = 'root ::= pair\npair ::= "(" pair? ")" | "[" pair? "]"\n'
arith = 'root ::= expr "="\nexpr ::= term (("+" | "*") term){0,3}\nterm ::= [0-9]{1,3} | "(" expr ")"\n'
with open(sys.argv[1], "w") as f:
    for i in range(12):
        body = {"prompt": f"Answer {i}", "max_tokens": 40, "temperature": 1, "seed": i, "data_parallel_rank": i % 2}
        url = "/v1/completions"
        if i % 3 == 0: body["guided_grammar"] = brackets
        if i % 3 == 1: body["ebnf"] = arith
        if i % 3 == 2:
            url = "/v1/chat/completions"
            body = dict(body, messages=[{"role": "user", "content": body.pop("prompt")}], structured_outputs={"grammar": arith})
        f.write(json.dumps({"custom_id": f"g{i}", "url": url, "body": body}) + "\n")
    f.write(json.dumps({"custom_id": "bad", "url": "/v1/completions",
                        "body": {"prompt": "x", "guided_grammar": 'root ::= "a" (b | "c"\nb ::= "b"'}}) + "\n")
PY
check_grammar_out() { $py - "$1" "$(cd "$(dirname "$0")/../serve" && pwd)" <<'PY'
import json, sys
sys.path.insert(0, sys.argv[2])
from grammar_check import Grammar
rows = {o["custom_id"]: o for o in map(json.loads, open(sys.argv[1]))}
ins = {}
stopped = 0
for i in range(12):
    r = rows[f"g{i}"]["response"]
    assert r["status_code"] == 200, r
    c = r["body"]["choices"][0]
    text = c["message"]["content"] if "message" in c else c["text"]
    g = Grammar('root ::= pair\npair ::= "(" pair? ")" | "[" pair? "]"\n' if i % 3 == 0 else
                'root ::= expr "="\nexpr ::= term (("+" | "*") term){0,3}\nterm ::= [0-9]{1,3} | "(" expr ")"\n')
    if c["finish_reason"] == "stop":
        assert g.member(text), (i, text)
        stopped += 1
    else:
        assert c["finish_reason"] == "length" and g.viable(text), (i, text, c["finish_reason"])
assert stopped >= 6, stopped
bad = rows["bad"]["response"]
assert bad["status_code"] == 400 and "expected ')'" in bad["body"]["error"]["message"] \
    and "line 1" in bad["body"]["error"]["message"], bad
print(f"{stopped} of 12 stopped")
PY
}
if timeout 300 $M -np 2 "$bin" batch "${model[@]}" --log-level warn --dp 2 --ep 2 --input "$work/grammar_in.jsonl" \
     --output "$work/grammar_out.jsonl" >"$work/grammar.log" 2>&1 && check_grammar_out "$work/grammar_out.jsonl" >>"$work/grammar.log" 2>&1; then
  ok "grammars on two replicas: answers are strings of their grammars ($(tail -1 "$work/grammar.log")), a bad one a 400 line"
else bad "grammar batch: $(tail -8 "$work/grammar.log")"; fi

finish
