#!/usr/bin/env bash
# Runs dpa_serve under mpiexec with bad layouts and launches: each must exit non-zero, quickly,
# with one error line from rank 0 that names the flag (or gives the hint).
#   cli_errors.sh MPIEXEC DPA_SERVE
set -u
mpiexec=$1; bin=$2
M="$mpiexec --oversubscribe"; [[ $(id -u) -eq 0 ]] && M="$M --allow-run-as-root"
fails=0; passes=0
expect() {  # expect NP "REGEX" ARGS...
  local np=$1 re=$2; shift 2
  local out rc
  out=$(timeout 60 $M -np "$np" "$bin" "$@" 2>&1); rc=$?
  local n_errors; n_errors=$(grep -c "dpa_serve: error:" <<<"$out")
  if [[ $rc -eq 0 || $rc -eq 124 ]] || ! grep -qE -- "$re" <<<"$out" || [[ $n_errors -ne 1 ]]; then
    echo "FAIL: np=$np $* (rc=$rc, error lines=$n_errors, want /$re/)"; echo "$out" | head -5; fails=$((fails+1))
  else
    passes=$((passes+1))
  fi
}
expect 8 "error: --dp: 3 does not divide" info --device cpu --dp 3
expect 8 "error: --ep: 3 does not divide" info --device cpu --ep 3
expect 4 "error: --dp: must be a positive" info --device cpu --dp 0
expect 4 "error: --ep: must be a positive" info --device cpu --ep -4
expect 2 "error: --dp: 4 does not divide" info --device cpu --dp 4
expect 2 "error: --device: unknown device" info --device tpu
expect 2 "unknown command 'frobnicate'" frobnicate
expect 2 "unrecognised option|unrecognized option" info --no-such-flag
out=$(SLURM_STEP_NUM_TASKS=4 timeout 60 "$bin" info --device cpu 2>&1); rc=$?
if [[ $rc -ne 0 ]] && grep -q "srun --mpi=pmix" <<<"$out"; then passes=$((passes+1)); else echo "FAIL: singleton under srun not refused: $out"; fails=$((fails+1)); fi
# --config holds the same names as the flags; the command line wins; bad values name the option.
cfg=$(mktemp); printf 'dp = 2\nep = 4\ndevice = cpu\n' >"$cfg"
out=$(timeout 60 $M -np 4 "$bin" info --config "$cfg" 2>/dev/null)
grep -q "^layout: world=4 dp=2 attn_tp=2 ep=4" <<<"$out" && passes=$((passes+1)) || { echo "FAIL: --config not applied: $out"; fails=$((fails+1)); }
out=$(timeout 60 $M -np 4 "$bin" info --config "$cfg" --dp 4 2>/dev/null)
grep -q "^layout: world=4 dp=4 attn_tp=1 ep=4" <<<"$out" && passes=$((passes+1)) || { echo "FAIL: flag does not override --config: $out"; fails=$((fails+1)); }
printf 'dp = two\n' >"$cfg"
expect 4 "option 'dp' is invalid" info --config "$cfg"
expect 2 "error: --config: cannot open" info --config /nonexistent.cfg
rm -f "$cfg"
# Engine flags with bad values name the flag (a tiny checkpoint to load).
model=$(mktemp -d)
if "$bin" make-model --preset tiny --output "$model/tiny" --log-level warn >/dev/null; then
  expect 2 "error: --kv-cache-dtype: 'fp8': expected auto, float32 or bfloat16" bench --model "$model/tiny" --device cpu --kv-cache-dtype fp8
  expect 2 "error: --kv-cache-dtype: the cpu backend keeps no bf16 KV cache" bench --model "$model/tiny" --device cpu --kv-cache-dtype bfloat16
  expect 2 "error: --cuda-graph-max-bs: must be in \\[0, 1048576\\]" bench --model "$model/tiny" --device cpu --cuda-graph-max-bs -1
  expect 2 "error: --ep-exchange: 'fast': exact or padded" bench --model "$model/tiny" --device cpu --ep-exchange fast
  expect 2 "error: --ep-exchange: padded sizes its blocks by --cuda-graph-max-bs, which is 0" bench --model "$model/tiny" --device cpu --ep-exchange padded --cuda-graph-max-bs 0
  expect 2 "error: --enable-two-batch-overlap: overlaps the padded exchange: add --ep-exchange padded" bench --model "$model/tiny" --device cpu --enable-two-batch-overlap
  expect 2 "error: --tbo-min-tokens: must be 0 \\(auto\\) or in \\[2, 1048576\\]: a split needs two tokens" bench --model "$model/tiny" --device cpu --tbo-min-tokens 1
  expect 2 "--tool-call-parser: 'hermes': auto, none, deepseek_v3 or deepseek_v31" bench --model "$model/tiny" --device cpu --tool-call-parser hermes
  expect 2 "--reasoning-parser: 'qwen3': none, deepseek_r1 or deepseek_v3" bench --model "$model/tiny" --device cpu --reasoning-parser qwen3
  expect 2 "--chat-template: '/nonexistent.jinja' is neither a file nor a template" bench --model "$model/tiny" --device cpu --chat-template /nonexistent.jinja
  expect 2 "--chat-template: .*line 1" bench --model "$model/tiny" --device cpu --chat-template "{% if %}"
  expect 2 "--enable-auto-tool-choice: needs a tool-call parser" bench --model "$model/tiny" --device cpu --tool-call-parser none --enable-auto-tool-choice
else
  echo "FAIL: make-model --preset tiny"; fails=$((fails+1))
fi
rm -rf "$model"
# A good layout still works and prints one line per rank.
out=$(timeout 60 $M -np 8 "$bin" info --device cpu --dp 4 --ep 8 2>/dev/null); rc=$?
if [[ $rc -eq 0 && $(grep -c "^rank " <<<"$out") -eq 8 ]] && grep -q "groups: ok" <<<"$out"; then passes=$((passes+1)); else echo "FAIL: good layout: $out"; fails=$((fails+1)); fi
echo "$passes passed, $fails failed"
[[ $fails -eq 0 ]]
