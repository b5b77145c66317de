#!/usr/bin/env bash
# `dpa_serve serve` acceptance on the CPU against a tiny random checkpoint:
#  1. 4 ranks, dp 4: the official openai SDK (Node) drives completions, chat, streams with
#     include_usage, n=2, logprobs, an aborted stream (openai_sdk_test.mjs), and /v1/responses
#     (openai_responses_test.mjs; its SSE event: lines checked with curl); grammar-constrained
#     output (output_checks.py grammar);
#  2. every endpoint and status code over plain HTTP (curl): 200s, 400s, 404s, 413, a client that
#     disconnects mid-stream frees its KV pages within 1 s (/get_load), SIGTERM drains (health 503,
#     new requests 503, the in-flight stream completes) and every rank exits 0;
#  3. 1 rank with --reasoning-parser deepseek_r1: the reasoning item of /v1/responses (and a store
#     that keeps nothing); 1 rank with --api-key (401), a queue limit of 1 (429 with Retry-After)
#     and a store of 2 responses (the least recently used evicted, counted in /metrics).
#  4. perf/bench_serving (when given) runs against the dp 4 server and prints its block.
#   serve_e2e.sh MPIEXEC DPA_SERVE NODE_MODULES WORKDIR [BENCH_SERVING]
set -u
mpiexec=$1; bin=$2; node_modules=$3; work=$4; bench=${5:-}
here=$(cd "$(dirname "$0")" && pwd)
source "$here/../lib.sh"
rm -rf "$work"; mkdir -p "$work"
command -v node >/dev/null || { echo "node is not installed: skipped"; exit 77; }
command -v curl >/dev/null || { echo "curl is not installed: skipped"; exit 77; }
[[ -d "$node_modules/openai" ]] || { echo "$node_modules/openai is missing (scripts/setup.sh installs it): skipped"; exit 77; }

"$bin" make-model --preset tiny --output "$work/tiny" --log-level warn >/dev/null || { echo "make-model failed"; exit 1; }

# start NAME NP ARGS...: lib.sh's start_server on the tiny model, and the ready line on stdout.
start() {
  local name=$1 np=$2; shift 2
  start_server "$name" "$np" "$work/tiny" "$@" || return 1
  grep -q "^ready url=$url" "$log" && ok "$name: ready line printed ($url)" || bad "$name: no ready line on stdout"
}
dump_log() { echo "---- server log ($log) ----"; tail -50 "$log"; echo "----"; }

# status CODE METHOD PATH [curl args...]: checks the HTTP status
expect() {
  local want=$1 method=$2 path=$3; shift 3
  local got
  got=$(curl -s -o "$work/body" -w '%{http_code}' -X "$method" "$url$path" "$@")
  if [[ "$got" == "$want" ]]; then ok "$method $path -> $want"; else bad "$method $path -> $got, want $want: $(head -c 300 "$work/body")"; fi
}
J=(-H 'Content-Type: application/json')

# ---------------------------------------------------------------- 4 ranks, dp 4
if start dp4 4 --dp 4 --ep 4 --max-request-bytes 65536 --shutdown-timeout 60 --log-level info; then
  node "$here/openai_sdk_test.mjs" "$url" "$node_modules" tiny >"$work/sdk.log" 2>&1 \
    && ok "openai SDK checks: $(tail -1 "$work/sdk.log")" || { bad "openai SDK checks:"; cat "$work/sdk.log"; dump_log; }

  node "$here/openai_responses_test.mjs" "$url" "$node_modules" tiny >"$work/responses.log" 2>&1 \
    && ok "openai SDK /v1/responses checks: $(tail -1 "$work/responses.log")" \
    || { bad "openai SDK /v1/responses checks:"; cat "$work/responses.log"; dump_log; }
  # Each SSE event of /v1/responses names its type on an event: line, as OpenAI's do.
  curl -sN "$url/v1/responses" "${J[@]}" -d '{"input":"hi","max_output_tokens":3,"stream":true}' >"$work/resp.sse"
  python3 - "$work/resp.sse" <<'PY' && ok "responses stream: event: lines match the data types" || bad "responses stream: $(head -c 400 "$work/resp.sse")"
import json, sys
blocks = [b for b in open(sys.argv[1]).read().split("\n\n") if b.strip()]
assert blocks, "no events"
for b in blocks:
    ev, data = b.split("\n")
    assert ev.startswith("event: ") and data.startswith("data: "), b
    assert json.loads(data[6:])["type"] == ev[7:], b
assert json.loads(blocks[-1].split("\n")[1][6:])["type"] in ("response.completed", "response.incomplete")
PY
  # Grammars (guided_grammar, ebnf, structured_outputs, response_format, /generate) across the 4
  # replicas: answers are strings of their grammars (grammar_check.py's matcher), bad grammars
  # and one past the recognizer's work cap are errors while the requests beside them succeed.
  python3 "$here/output_checks.py" grammar "$url" "" >"$work/grammar.log" 2>&1 \
    && ok "$(tail -1 "$work/grammar.log")" || { bad "grammar checks:"; cat "$work/grammar.log"; dump_log; }
  expect 405 GET /v1/responses
  expect 404 GET /v1/responses/resp_unknown
  grep -q '"param":"response_id"' "$work/body" || bad "unknown response id: $(cat "$work/body")"
  expect 404 DELETE /v1/responses/resp_unknown
  expect 404 GET /v1/responses/resp_unknown/input_items
  grep -q '"param":"response_id"' "$work/body" || bad "input_items of an unknown id: $(cat "$work/body")"
  expect 405 POST /v1/responses/resp_unknown/input_items "${J[@]}" -d '{}'
  expect 404 GET /v1/responses/resp_unknown/cancel
  expect 400 POST /v1/responses "${J[@]}" -d '{"input":"x","background":true}'
  grep -q '"param":"background"' "$work/body" || bad "background: $(cat "$work/body")"

  expect 200 GET /health
  expect 200 GET /v1/models
  expect 200 GET /v1/models/tiny
  expect 404 GET /v1/models/other
  expect 200 GET /version
  grep -q '"version"' "$work/body" || bad "/version has no version"
  expect 200 GET /get_server_info
  grep -q '"dp_size":4' "$work/body" && ok "get_server_info dp_size 4" || bad "get_server_info: $(cat "$work/body")"
  expect 200 GET /get_load
  [[ $(grep -o '"dp_rank"' "$work/body" | wc -l) -eq 4 ]] && ok "get_load has 4 replicas" || bad "get_load: $(cat "$work/body")"
  expect 200 POST /tokenize "${J[@]}" -d '{"prompt":"Hello world"}'
  grep -q '"count":' "$work/body" || bad "tokenize: $(cat "$work/body")"
  toks=$(sed 's/.*"tokens":\(\[[^]]*\]\).*/\1/' "$work/body")
  expect 200 POST /detokenize "${J[@]}" -d "{\"tokens\":$toks}"
  grep -q 'Hello world' "$work/body" && ok "detokenize round trip" || bad "detokenize: $(cat "$work/body")"
  expect 200 POST /tokenize "${J[@]}" -d '{"messages":[{"role":"user","content":"hi"}]}'
  expect 400 POST /detokenize "${J[@]}" -d '{"tokens":[-1]}'
  expect 200 GET /health_generate
  expect 200 POST /flush_cache
  expect 200 GET /metrics
  for m in vllm:num_requests_running vllm:num_requests_waiting vllm:kv_cache_usage_perc vllm:prompt_tokens_total \
           vllm:generation_tokens_total vllm:time_to_first_token_seconds_bucket vllm:inter_token_latency_seconds_bucket \
           vllm:e2e_request_latency_seconds_bucket vllm:request_queue_time_seconds_bucket \
           vllm:prefix_cache_queries_total vllm:prefix_cache_hits_total; do
    grep -q "^$m{.*dp_rank=\"3\"" "$work/body" || bad "/metrics lacks $m with dp_rank 3"
  done
  grep -q '^dpa:expert_tokens_total{' "$work/body" || bad "/metrics lacks dpa:expert_tokens_total"
  ok "/metrics names checked"
  # pinning: a request for replica 2 shows up in its generation counter
  before=$(curl -s "$url/metrics" | sed -n 's/^vllm:generation_tokens_total{.*dp_rank="2"} //p')
  expect 200 POST /v1/completions "${J[@]}" -d '{"prompt":"pin","max_tokens":3,"ignore_eos":true,"data_parallel_rank":2}'
  after=$(curl -s "$url/metrics" | sed -n 's/^vllm:generation_tokens_total{.*dp_rank="2"} //p')
  [[ $((after - before)) -eq 3 ]] && ok "data_parallel_rank 2 pinned" || bad "pinning: dp_rank 2 counter $before -> $after"
  expect 200 POST /v1/completions "${J[@]}" -d '{"prompt":"x","max_tokens":2,"unknown_field":{"a":1},"user":"u"}'
  # errors
  expect 404 GET /no/such/route
  expect 404 POST /v1/completions "${J[@]}" -d '{"model":"other","prompt":"x"}'
  expect 400 POST /v1/completions "${J[@]}" -d '{"prompt":"x",'
  expect 400 POST /v1/completions "${J[@]}" -d '{"prompt":"x","max_tokens":-1}'
  expect 400 POST /v1/completions "${J[@]}" -d '{"prompt":[999999999],"max_tokens":1}'
  expect 400 POST /v1/completions "${J[@]}" -d '{"prompt":"x","max_tokens":100000}'
  expect 400 POST /v1/completions "${J[@]}" -d '{"prompt":"x","data_parallel_rank":9}'
  expect 400 POST /v1/chat/completions "${J[@]}" -d '{"messages":[]}'
  grep -q '"error":{' "$work/body" && grep -q '"type":' "$work/body" && ok "error body has the OpenAI shape" \
    || bad "error body: $(cat "$work/body")"
  head -c 100000 /dev/zero | tr '\0' 'a' >"$work/big.txt"
  expect 413 POST /v1/completions "${J[@]}" --data-binary @"$work/big.txt"
  expect 200 GET /health  # the server survived all of that

  if [[ -n "$bench" ]]; then
    if "$bench" --base-url "$url" --num-prompts 8 --random-input-len 32 --random-output-len 8 --max-concurrency 4 \
         >"$work/bench.log" 2>&1 && grep -q '^Successful requests: *8$' "$work/bench.log" \
         && grep -q '"completed":8' "$work/bench.log"; then
      ok "bench_serving: $(grep 'Output token throughput' "$work/bench.log")"
    else
      bad "bench_serving:"; cat "$work/bench.log"
    fi
  fi

  # a client that disconnects mid-stream: its request is aborted, KV pages freed within 1 s
  curl -sN --max-time 1.5 "$url/v1/completions" "${J[@]}" \
    -d '{"prompt":"disconnect me","max_tokens":1500,"ignore_eos":true,"stream":true}' >"$work/disc.out" 2>/dev/null
  t0=$(date +%s%N); freed=0
  while :; do
    load=$(curl -s "$url/get_load")
    busy=$(echo "$load" | grep -o '"num_reqs":[0-9]*' | cut -d: -f2 | awk '{s+=$1} END {print s+0}')
    used=$(echo "$load" | sed 's/},{/\n/g' | sed -n 's/.*"kv_free_blocks":\([0-9]*\),"kv_total_blocks":\([0-9]*\).*/\1 \2/p' \
           | awk '{s+=$2-$1} END {print s+0}')
    [[ "$busy" == 0 && "$used" == 0 ]] && { freed=1; break; }
    (( ($(date +%s%N) - t0) / 1000000 > 1000 )) && break
    sleep 0.02
  done
  dt=$(( ($(date +%s%N) - t0) / 1000000 ))
  grep -q '^data: {' "$work/disc.out" || bad "disconnect test: the stream never started"
  [[ $freed == 1 ]] && ok "mid-stream disconnect freed its KV pages in ${dt} ms" || bad "after a disconnect: $load"

  # SIGTERM drain: the in-flight stream completes, health and new requests get 503, all ranks exit 0
  curl -sN "$url/v1/completions" "${J[@]}" -d '{"prompt":"drain","max_tokens":100,"ignore_eos":true,"stream":true}' \
    >"$work/drain.out" 2>/dev/null &
  curl_pid=$!
  sleep 0.5
  r0=$(rank0_pid)
  [[ -n "$r0" ]] || bad "cannot find the rank-0 process"
  kill -TERM "$r0"
  sleep 0.3
  expect 503 GET /health
  expect 503 POST /v1/completions "${J[@]}" -d '{"prompt":"late","max_tokens":2}'
  wait "$curl_pid"
  tail -1 "$work/drain.out" | grep -q '^data: \[DONE\]' || tail -2 "$work/drain.out" | grep -q 'DONE' \
    && ok "the in-flight stream finished during the drain" || bad "drain stream: $(tail -c 300 "$work/drain.out")"
  grep -q '"finish_reason":"length"' "$work/drain.out" && ok "drained stream ended by length" || bad "drained stream was cut"
  wait "$mpirun_pid"; rc=$?
  [[ $rc -eq 0 ]] && ok "SIGTERM: every rank exited 0" || { bad "SIGTERM: mpirun exited $rc"; dump_log; }
fi

# ---------------------------------------------------------------- 1 rank, R1's reasoning parser
# (and --responses-max-stored 0: store: true is answered as store: false, nothing is kept)
if start reasoning 1 --dp 1 --ep 1 --reasoning-parser deepseek_r1 --responses-max-stored 0 --shutdown-timeout 1 \
     --log-level warn; then
  node "$here/openai_responses_test.mjs" "$url" "$node_modules" tiny reasoning >"$work/responses_reasoning.log" 2>&1 \
    && ok "openai SDK /v1/responses reasoning: $(tail -1 "$work/responses_reasoning.log")" \
    || { bad "openai SDK /v1/responses reasoning:"; cat "$work/responses_reasoning.log"; dump_log; }
  expect 200 POST /v1/responses "${J[@]}" -d '{"input":"keep me","max_output_tokens":2,"store":true}'
  rid=$(sed -n 's/^{"id":"\(resp_[0-9a-f]*\)".*/\1/p' "$work/body")
  grep -q '"store":false' "$work/body" && ok "--responses-max-stored 0: store: true answered as store: false" \
    || bad "--responses-max-stored 0: $(head -c 300 "$work/body")"
  expect 404 GET "/v1/responses/$rid"
  grep -q 'stores no responses' "$work/body" || bad "--responses-max-stored 0, GET: $(cat "$work/body")"
  kill -TERM "$(rank0_pid)"
  wait "$mpirun_pid"; rc=$?
  [[ $rc -eq 0 ]] && ok "reasoning server: SIGTERM exit 0" || { bad "reasoning server: mpirun exited $rc"; dump_log; }
fi

# ---------------------------------------------------------------- 1 rank, api key, queue limit 1
# (and --responses-max-stored 2: the least recently used response is evicted, and counted)
if start auth 1 --dp 1 --ep 1 --api-key s3cret --max-queued-requests 1 --responses-max-stored 2 --shutdown-timeout 1 \
     --log-level info; then
  expect 200 GET /health
  expect 401 GET /v1/models
  expect 401 GET /v1/models -H 'Authorization: Bearer wrong'
  expect 401 GET /metrics -H 'Authorization: Bearer s3cret-and-more'
  expect 200 GET /v1/models -H 'Authorization: Bearer s3cret'
  A=(-H 'Authorization: Bearer s3cret')
  ids=()
  for i in 1 2 3; do
    expect 200 POST /v1/responses "${J[@]}" "${A[@]}" -d '{"input":"turn '$i'","max_output_tokens":2}'
    ids+=("$(sed -n 's/^{"id":"\(resp_[0-9a-f]*\)".*/\1/p' "$work/body")")
    [[ $i == 2 ]] && expect 200 GET "/v1/responses/${ids[0]}" "${A[@]}"  # the first is now used last
  done
  expect 404 GET "/v1/responses/${ids[1]}" "${A[@]}"
  grep -q 'evicted' "$work/body" || bad "evicted response: $(cat "$work/body")"
  expect 404 POST /v1/responses "${J[@]}" "${A[@]}" -d '{"input":"x","previous_response_id":"'"${ids[1]}"'","max_output_tokens":2}'
  grep -q '"param":"previous_response_id"' "$work/body" && grep -q 'evicted' "$work/body" \
    || bad "previous_response_id of an evicted response: $(cat "$work/body")"
  expect 200 GET "/v1/responses/${ids[0]}" "${A[@]}"
  expect 200 GET "/v1/responses/${ids[2]}" "${A[@]}"
  curl -s "${A[@]}" "$url/metrics" | grep -q '^dpa:responses_evicted_total{model_name="tiny"} 1$' \
    && ok "dpa:responses_evicted_total counts the eviction" || bad "dpa:responses_evicted_total: $(curl -s "${A[@]}" "$url/metrics" | grep responses)"
  # n=2 is two engine requests: over a limit of 1 on its own
  expect 429 POST /v1/completions "${J[@]}" "${A[@]}" -d '{"prompt":"two","max_tokens":2,"n":2}'
  grep -q '"code":429' "$work/body" || bad "429 body: $(cat "$work/body")"
  # a burst of long prompts: the first waits for its prefill while the others arrive
  long="[$(seq -s, 1000 2500)]"
  for i in 1 2 3 4 5 6; do
    curl -s -D "$work/q$i.head" -o "$work/q$i.body" "$url/v1/completions" "${J[@]}" "${A[@]}" \
      -d '{"prompt":'"$long"',"max_tokens":4,"ignore_eos":true}' &
  done
  wait $(jobs -p | grep -v "^$mpirun_pid$")
  n429=$(grep -l '^HTTP/1.1 429' "$work"/q*.head | wc -l)
  n200=$(grep -l '^HTTP/1.1 200' "$work"/q*.head | wc -l)
  [[ $n429 -ge 1 && $n200 -ge 1 ]] && ok "queue limit 1: $n200 served, $n429 got 429" || bad "queue limit: $n200 x 200, $n429 x 429"
  f429=$(grep -l '^HTTP/1.1 429' "$work"/q*.head | head -1)
  [[ -n "$f429" ]] && grep -qi '^Retry-After:' "$f429" && ok "429 has Retry-After" || bad "429 without Retry-After"
  # drain with a stream that outlives --shutdown-timeout 1: it is aborted, still ends cleanly
  curl -sN "$url/v1/completions" "${J[@]}" "${A[@]}" -d '{"prompt":"long","max_tokens":1500,"ignore_eos":true,"stream":true}' \
    >"$work/abort.out" 2>/dev/null &
  curl_pid=$!
  sleep 0.5
  kill -TERM "$(rank0_pid)"
  wait "$curl_pid"
  grep -q '"finish_reason":"abort"' "$work/abort.out" && ok "drain timeout aborts the stream" \
    || bad "drain timeout stream: $(tail -c 300 "$work/abort.out")"
  wait "$mpirun_pid"; rc=$?
  [[ $rc -eq 0 ]] && ok "auth server: SIGTERM exit 0" || { bad "auth server: mpirun exited $rc"; dump_log; }
fi

if [[ $fails -gt 0 ]]; then
  for f in "$work"/*.log; do echo "---- $f ----"; tail -40 "$f"; done
fi
echo "serve e2e: $passes passed, $fails failed"
[[ $fails -eq 0 ]]
