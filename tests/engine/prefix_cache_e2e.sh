#!/usr/bin/env bash
# Prefix caching acceptance on the CPU, against a tiny random checkpoint made by make-model:
#  1. a batch of token-id prompts in groups sharing prefixes (whole prompts that are page
#     multiples, n=2 choices, partial last pages) gives identical greedy token ids with prefix
#     caching off at (W,dp,ep) = (1,1,1) and on at (1,1,1), (2,2,2) and (4,4,4); hits are reported
#     (engine log, usage.prompt_tokens_details.cached_tokens);
#  2. the same with a KV cache small enough that preemption and eviction happen, caching on and off,
#     and with a step budget small enough that every shared prefix is prefilled in chunks;
#  3. --enable-prefix-caching=false and --no-prefix-caching report no hits;
#  4. serve (dp 2, cache_aware): a repeated prompt reports cached_tokens, /metrics counts the hits
#     per dp_rank, /flush_cache empties every replica's cache (the next request reuses nothing),
#     and SIGTERM ends every rank with status 0;
#  5. bench --dataset-name generated-shared-prefix prints the hit rate in the block and JSON line.
# The engine checks at exit that free + used KV pages == total and that no page is still held on
# every replica (the job aborts otherwise), so every run below checks that too.
#   prefix_cache_e2e.sh MPIEXEC DPA_SERVE WORKDIR
set -u
mpiexec=$1; bin=$2; work=$3
py=/usr/bin/python3
source "$(cd "$(dirname "$0")" && pwd)/../lib.sh"
rm -rf "$work"; mkdir -p "$work"

"$bin" make-model --preset tiny --output "$work/tiny" --log-level warn >/dev/null || { echo "make-model failed"; exit 1; }
model=(--model "$work/tiny" --device cpu --no-progress)

# 4 groups of prompts sharing a prefix of 37, 64, 80 and 129 tokens (page size 16 and 8 below),
# suffixes of 0..23 tokens, some with n=2.
$py - "$work/prefix.jsonl" <<'PY'
import json, random, sys
rng = random.Random(7)
prefixes = [[rng.randrange(10, 120000) for _ in range(n)] for n in (37, 64, 80, 129)]
with open(sys.argv[1], "w") as f:
    i = 0
    for p in prefixes:
        for k in range(10):
            suffix = [] if k == 9 else [rng.randrange(10, 120000) for _ in range(rng.choice([0, 1, 5, 9, 16, 23]))]
            body = {"prompt": p + suffix, "max_tokens": 8 + i % 9, "temperature": 0, "ignore_eos": True}
            if i % 7 == 3: body["n"] = 2
            f.write(json.dumps({"custom_id": f"p{i}", "method": "POST", "url": "/v1/completions", "body": body}) + "\n")
            i += 1
PY

hits() { grep -o 'prefix_cache_hits=[0-9]*' "$1" | head -1 | cut -d= -f2; }
cached_sum() { $py -c '
import json, sys
print(sum(json.loads(l)["response"]["body"]["usage"].get("prompt_tokens_details", {}).get("cached_tokens", 0)
          for l in open(sys.argv[1]) if json.loads(l).get("response", {}).get("status_code") == 200))' "$1"; }

run_batch() {  # run_batch NAME NP ARGS...
  local name=$1 np=$2; shift 2
  timeout 600 $M -np "$np" "$bin" batch "${model[@]}" --input "$work/prefix.jsonl" --output "$work/$name.jsonl" \
    --log-level info "$@" >"$work/$name.log" 2>&1
}

# 1. Off vs on, three layouts.
run_batch off 1 --dp 1 --ep 1 --no-prefix-caching || bad "reference run (caching off) failed: $(tail -3 "$work/off.log")"
ref=$(batch_canon "$work/off.jsonl")
n_ok=$(grep -c '"status_code":200' "$work/off.jsonl")
[[ $n_ok -eq 40 ]] && ok "reference: $n_ok lines" || bad "reference has $n_ok successful lines, want 40"
[[ $(hits "$work/off.log") == 0 ]] && ok "caching off: no hits" || bad "caching off reports hits: $(grep prefix_cache "$work/off.log")"
for layout in "1 1 1" "2 2 2" "4 4 4"; do
  set -- $layout
  name="on_w$1_dp$2_ep$3"
  if run_batch "$name" "$1" --dp "$2" --ep "$3"; then
    [[ $(batch_canon "$work/$name.jsonl") == "$ref" ]] && ok "$name matches caching off" || bad "$name differs from caching off"
    h=$(hits "$work/$name.log")
    [[ ${h:-0} -gt 0 ]] && ok "$name: $h prompt tokens from the cache" || bad "$name: no cache hits"
    c=$(cached_sum "$work/$name.jsonl")
    [[ ${c:-0} -gt 0 ]] && ok "$name: usage reports $c cached tokens" || bad "$name: usage reports no cached tokens"
  else
    bad "$name failed: $(tail -3 "$work/$name.log")"
  fi
done

# 2. Preemption and eviction: 24 pages of 8 tokens per replica.
small=(--page-size 8 --max-total-tokens 192 --max-model-len 192)
for mode in on off; do
  extra=(); [[ $mode == off ]] && extra=(--enable-prefix-caching=false)
  name="preempt_$mode"
  if run_batch "$name" 2 --dp 2 --ep 2 "${small[@]}" "${extra[@]}"; then
    np=$(grep -o 'preemptions=[0-9]*' "$work/$name.log" | head -1 | cut -d= -f2)
    [[ ${np:-0} -gt 0 ]] && ok "$name: preemption happened ($np)" || bad "$name: no preemption with a tiny KV cache"
    [[ $(batch_canon "$work/$name.jsonl") == "$ref" ]] && ok "$name matches the reference" || bad "$name differs from the reference"
    h=$(hits "$work/$name.log")
    if [[ $mode == on ]]; then [[ ${h:-0} -gt 0 ]] && ok "$name: $h hits" || bad "$name: no hits"
    else [[ ${h:-1} -eq 0 ]] && ok "$name (--enable-prefix-caching=false): no hits" || bad "$name: hits with caching off"; fi
  else
    bad "$name failed: $(tail -3 "$work/$name.log")"
  fi
done

# Chunked prefill: a 24-token step budget splits every shared prefix over several steps.
if run_batch chunked 2 --dp 2 --ep 2 --page-size 8 --max-num-batched-tokens 24; then
  [[ $(batch_canon "$work/chunked.jsonl") == "$ref" ]] && ok "chunked prefill (24-token budget) matches the reference" || bad "chunked prefill differs"
  h=$(hits "$work/chunked.log")
  [[ ${h:-0} -gt 0 ]] && ok "chunked: $h hits" || bad "chunked: no hits"
else
  bad "chunked run failed: $(tail -3 "$work/chunked.log")"
fi

# 4. serve: cached_tokens in usage, /metrics, /flush_cache through the step protocol.
if command -v curl >/dev/null; then
  if start_server serve 2 "$work/tiny" --dp 2 --ep 2 --router-policy cache_aware --log-level info; then
    body=$($py -c 'import json; print(json.dumps({"prompt": list(range(1000, 1100)), "max_tokens": 4, "temperature": 0, "ignore_eos": True}))')
    ask() { curl -s -H 'Content-Type: application/json' -d "$body" "$url/v1/completions"; }
    field() { $py -c 'import json, sys; o = json.loads(sys.stdin.read()); print(o["usage"].get("prompt_tokens_details", {}).get("cached_tokens"), o["choices"][0]["text"])'; }
    r1=$(ask | field); r2=$(ask | field)
    [[ ${r2%% *} == 96 && ${r1#* } == "${r2#* }" ]] && ok "serve: a repeated 100-token prompt reuses 96 tokens ($r1 / $r2)" \
      || bad "serve: first '$r1', second '$r2' (want 96 cached and the same text)"
    m=$(curl -s "$url/metrics" | grep '^vllm:prefix_cache_hits_total' | awk '{s += $2} END {print s + 0}')
    q=$(curl -s "$url/metrics" | grep -c '^vllm:prefix_cache_queries_total{.*dp_rank=')
    [[ $m -ge 96 && $q -eq 2 ]] && ok "serve: /metrics counts $m hit tokens over 2 dp_ranks" || bad "serve: /metrics hits $m, $q query lines"
    code=$(curl -s -o /dev/null -w '%{http_code}' -X POST "$url/flush_cache")
    r3=$(ask | field)
    [[ $code == 200 && ${r3%% *} == 0 && ${r3#* } == "${r1#* }" ]] && ok "serve: after /flush_cache nothing is reused ($r3)" \
      || bad "serve: /flush_cache $code, then '$r3'"
    r4=$(ask | field)
    [[ ${r4%% *} == 96 ]] && ok "serve: cached again after the flush" || bad "serve: after flush and one request: '$r4'"
    # SIGTERM to rank 0, which drains and shuts the engine down on every rank.
    stop_server
    [[ $server_rc -eq 0 ]] && ok "serve: every rank exited 0 (KV accounting held)" || bad "serve exited $server_rc: $(tail -5 "$log")"
  fi
else
  echo "curl is not installed: serve checks skipped"
fi

# 5. bench on the shared-prefix workload.
out=$(timeout 300 $M -np 2 "$bin" bench --model "$work/tiny" --device cpu --log-level warn --dp 2 --ep 2 \
  --dataset-name generated-shared-prefix --gsp-num-groups 2 --gsp-prompts-per-group 3 --gsp-system-prompt-len 64 \
  --gsp-question-len 8 --gsp-output-len 4 --router-policy cache_aware 2>&1)
if grep -q "Prefix cache hit rate:" <<<"$out" && grep -q '"prefix_cache_hit_rate":' <<<"$out" \
   && grep -q '"total_input_tokens":432' <<<"$out" && grep -q '"total_output_tokens":24' <<<"$out" \
   && grep -q '"prefix_cache_hits":256' <<<"$out"; then ok "bench generated-shared-prefix: hit rate in the block and JSON line"
else bad "bench output: $out"; fi

finish
