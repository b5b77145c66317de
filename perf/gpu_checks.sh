#!/usr/bin/env bash
# One call on the GPU host: everything packed in .gpupack/ is checked, then timed.
#   bash perf/gpu_checks.sh [step...]    steps: info nccl-test sweep ep share tbo mla fallback scoring e2e e2e2 structured golden
#   (default: all but tbo, e2e and structured, which make a 31 GB model)
# Writes logs under $OUT (or ./out). Binaries come from ../shared/gpu/pack.sh -o .gpupack.
set -uo pipefail
out=${OUT:-out}; mkdir -p "$out"
export LD_LIBRARY_PATH=$PWD/.gpupack/lib:${LD_LIBRARY_PATH:-}
export NCCL_NVLS_ENABLE=0
ngpu=$(nvidia-smi -L | wc -l)
M="mpirun --allow-run-as-root --bind-to none -x LD_LIBRARY_PATH -x NCCL_NVLS_ENABLE -x NCCL_DEBUG"
steps=${*:-info nccl-test sweep ep mla scoring golden}  # tbo: asked for by name (it makes a 31 GB model)
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$out/gpus.txt"
for step in $steps; do
  echo "=== $step"
  case $step in
    info) $M -np "$ngpu" .gpupack/bin/dpa_serve info --device cuda 2>&1 | tee "$out/info.txt" ;;
    nccl-test)
      NCCL_DEBUG=VERSION $M -np 1 .gpupack/bin/test_nccl_communicator 2>&1 | tail -5 | tee "$out/nccl_test_np1.txt"
      [[ $ngpu -ge 2 ]] && $M -np 2 .gpupack/bin/test_nccl_communicator 2>&1 | tail -25 | tee "$out/nccl_test_np2.txt" ;;
    sweep)
      [[ $ngpu -ge 2 ]] && NCCL_DEBUG=VERSION $M -np 2 .gpupack/bin/alltoall_sweep --comm nccl --min-bytes 1K --max-bytes 256M --iters 50 2>&1 | tee "$out/alltoall_nccl_np2.txt"
      [[ $ngpu -ge 2 ]] && $M -np 2 .gpupack/bin/alltoall_sweep --comm mpi --min-bytes 1K --max-bytes 64M --iters 20 2>&1 | grep -v '^{' | tee "$out/alltoall_mpi_np2.txt" ;;
    ep)  # the MoE exchange (issue 6, target 3): every form checked, then timed; two GPUs and more
      np=$(( ngpu >= 2 ? 2 : 1 ))
      # Its ops against the CPU first (bf16 rows and results included), then the model through
      # the exchange with itself on one GPU, bf16 rows on and off.
      [[ -x .gpupack/bin/test_backend_parity ]] && .gpupack/bin/test_backend_parity \
        --gtest_filter='*MoeEp*:*MoeExperts*:*GatherScatterCombine*' 2>&1 | grep -E "^\[  (PASSED|FAILED)|FAILED  \]" |
        tee "$out/ep_parity.txt"
      if [[ -x .gpupack/bin/golden_forward ]]; then
        for f in v2 v3; do for rows in 1 0; do
          echo "-- $f DPA_EP_BF16_ROWS=$rows" | tee -a "$out/golden_self_exchange.txt"
          DPA_EP_BF16_ROWS=$rows .gpupack/bin/golden_forward --fixture=tests/golden/fixtures/$f --device=cuda \
            --weights=bf16 --ep-padded=4096 --ep-self-exchange --tbo=2 --cuda-graphs 2>&1 |
            grep -E "worst|PASSED|FAILED" | tee -a "$out/golden_self_exchange.txt"
        done; done
      fi
      # Two processes on one GPU: the peer form across processes, bf16 both ways.
      $M -np 2 .gpupack/bin/ep_exchange_bench --device cuda --comm mpi --same-gpu 1 --forms peer --tokens 16,256 \
        --iters 20 2>&1 | tee "$out/ep_exchange_same_gpu.txt"
      $M -np $np .gpupack/bin/ep_exchange_bench --device cuda --tokens 1,16,64,128,256,512 --iters 100 2>&1 | tee "$out/ep_exchange_np$np.txt"
      # The bytes moved: f32 rows and results against the default bf16 (same lease).
      $M -np $np .gpupack/bin/ep_exchange_bench --device cuda --tokens 128,256 --iters 100 --rows f32 --results f32 2>&1 | tee -a "$out/ep_exchange_np$np.txt"
      if [[ $ngpu -ge 2 && -x .gpupack/bin/golden_forward ]]; then  # the model over it, exact against padded
        for f in v2 v3; do for extra in "" "--cuda-graphs" "--tbo=2" "--tbo=2 --cuda-graphs"; do
          $M -np 2 -x DPA_EP_BF16_ROWS .gpupack/bin/golden_forward --fixture=tests/golden/fixtures/$f --dp=2 --ep=2 --device=cuda \
            --weights=bf16 --ep-padded=4096 $extra 2>&1 | grep -E "PASSED|FAILED|decode graphs:|two-batch" | tee -a "$out/golden_ep_padded.txt"
        done; done
      fi ;;
    share)  # the multi-rank GPU code on one GPU: two ranks share it over staged MPI communicators
      # (DPA_SHARE_GPU=1 / --share-gpu; NCCL refuses two ranks on one device). Correctness only:
      # the ranks' contexts take turns on the GPU, so no timing here means anything.
      DPA_STAGED_TEST_CUDA=1 $M -np 2 -x DPA_STAGED_TEST_CUDA .gpupack/bin/test_staged_communicator 2>&1 |
        grep -E "PASSED|FAILED" | tee "$out/share.txt"
      # Decode graphs and the two-batch overlap need the padded exchange and single-rank replicas
      # (dp = world); the exact exchange and attn_tp 2 (dp 1) run eager and unsplit.
      [[ ${SHARE_GOLDEN:-1} == 1 ]] && for f in v2 v3; do for run in "--dp=2 --ep=2 --ep-padded=4096" "--dp=2 --ep=2 --ep-padded=4096 --cuda-graphs" \
          "--dp=2 --ep=2 --ep-padded=4096 --tbo=2" "--dp=2 --ep=2 --ep-padded=4096 --tbo=2 --cuda-graphs" \
          "--dp=2 --ep=2" "--dp=1 --ep=2 --ep-padded=4096" "--dp=1 --ep=2"; do
        $M -np 2 .gpupack/bin/golden_forward --fixture=tests/golden/fixtures/$f --device=cuda --weights=bf16 --share-gpu \
          $run >/tmp/share_golden.log 2>&1
        echo "-- $f $run: exit $? ($(grep -cE "\[ +OK \]" /tmp/share_golden.log) forms OK;" \
          "$(grep -m1 -oE "decode graphs: [0-9]+ recorded, [0-9]+ replays" /tmp/share_golden.log)" \
          "$(grep -m1 -oE "two-batch overlap: [0-9]+ steps" /tmp/share_golden.log))" | tee -a "$out/share.txt"
        grep -E "Failure|worst" /tmp/share_golden.log | sort -u | head -6 | tee -a "$out/share.txt"
        grep -qE "PASSED" /tmp/share_golden.log || tail -15 /tmp/share_golden.log | tee -a "$out/share.txt"
      done; done
      # The server's whole step loop at dp 2 / ep 2 on the tiny model: a batch file's greedy answers
      # against one rank's (a differing answer is a near tie or a fault: the count is printed).
      [[ -f /tmp/tiny/config.json ]] || .gpupack/bin/dpa_serve make-model --preset tiny --output /tmp/tiny \
        --tokenizer-dir .gpupack/tok 2>&1 | tail -1
      # The sample batch with each line's two best logprobs asked for (its bad lines as they are).
      python3 -c 'import json, sys
for line in open(sys.argv[1]):
    try:
        r = json.loads(line); b = r["body"]
        b.update({"logprobs": 2} if r["url"] == "/v1/completions" else {"logprobs": True, "top_logprobs": 2})
        line = json.dumps(r) + "\n"
    except Exception:
        pass
    sys.stdout.write(line)' inputs/sample_batch.jsonl > /tmp/share_in.jsonl
      rm -f /tmp/share_np1.jsonl
      $M -np 1 .gpupack/bin/dpa_serve batch --model /tmp/tiny --device cuda --input /tmp/share_in.jsonl \
        --output /tmp/share_np1.jsonl 2>&1 | tail -2 | tee -a "$out/share.txt"
      # One rank again, three requests at a time: how many answers a different batching alone
      # changes on this GPU (the tiny random model has near ties), the yardstick for the counts below.
      rm -f /tmp/share_np1b.jsonl
      $M -np 1 .gpupack/bin/dpa_serve batch --model /tmp/tiny --device cuda --max-num-seqs 3 --input /tmp/share_in.jsonl \
        --output /tmp/share_np1b.jsonl >/dev/null 2>&1
      echo "-- one rank, --max-num-seqs 3" | tee -a "$out/share.txt"
      python3 perf/batch_answers_cmp.py /tmp/share_np1.jsonl /tmp/share_np1b.jsonl 2>&1 | tee -a "$out/share.txt"
      # One rank with --enforce-eager: no fixed-capacity experts, so the shared MLP runs apart (in f32,
      # one down projection) as it does across ranks, not as bf16 pieces among the routed experts.
      # On the CPU the pieces alone move one of the 31 answers (a near tie, margin 3e-5).
      rm -f /tmp/share_np1e.jsonl
      $M -np 1 .gpupack/bin/dpa_serve batch --model /tmp/tiny --device cuda --enforce-eager --input /tmp/share_in.jsonl \
        --output /tmp/share_np1e.jsonl >/dev/null 2>&1
      echo "-- one rank, --enforce-eager (shared experts apart)" | tee -a "$out/share.txt"
      python3 perf/batch_answers_cmp.py /tmp/share_np1.jsonl /tmp/share_np1e.jsonl --detail 2>&1 | tee -a "$out/share.txt"
      for ex in "--ep-exchange padded" "--ep-exchange padded --enable-two-batch-overlap --tbo-min-tokens 2" ""; do
        echo "-- batch dp 2 ep 2 $ex" | tee -a "$out/share.txt"
        rm -f /tmp/share_np2.jsonl  # a batch resumes an output file it finds
        DPA_SHARE_GPU=1 $M -np 2 -x DPA_SHARE_GPU .gpupack/bin/dpa_serve batch --model /tmp/tiny --device cuda --dp 2 --ep 2 \
          $ex --input /tmp/share_in.jsonl --output /tmp/share_np2.jsonl 2>&1 | tail -2 | tee -a "$out/share.txt"
        python3 perf/batch_answers_cmp.py /tmp/share_np1.jsonl /tmp/share_np2.jsonl --detail 2>&1 | tee -a "$out/share.txt"
        echo "   against one eager rank:" | tee -a "$out/share.txt"
        python3 perf/batch_answers_cmp.py /tmp/share_np1e.jsonl /tmp/share_np2.jsonl --detail 2>&1 | tee -a "$out/share.txt"
      done
      # V2-Lite at dp 2 / ep 2 through the padded exchange over peer memory, graphs on (the default).
      [[ ${SHARE_V2L:-1} == 1 ]] || continue
      [[ -f /tmp/v2l/config.json ]] || .gpupack/bin/dpa_serve make-model --preset v2-lite --output /tmp/v2l \
        --tokenizer-dir .gpupack/tok 2>&1 | tail -1
      DPA_SHARE_GPU=1 $M -np 2 -x DPA_SHARE_GPU .gpupack/bin/dpa_serve bench --model /tmp/v2l --device cuda --dp 2 --ep 2 \
        --num-prompts 64 --max-num-seqs 32 --random-input-len 256 --random-output-len 64 --ep-exchange padded 2>&1 |
        grep -E "padded ep|decode graphs|Successful|token throughput|rror" | tee -a "$out/share.txt" ;;
    tbo)  # the two-batch overlap (issue 6, target 7) on V2-Lite, two GPUs: where does the split win?
      if [[ $ngpu -ge 2 ]]; then
        [[ -f /tmp/v2l/config.json ]] || .gpupack/bin/dpa_serve make-model --preset v2-lite --output /tmp/v2l \
          --tokenizer-dir .gpupack/tok 2>&1 | tail -1
        for w in "512 128 512" "2048 4 8192"; do set -- $w
          for flags in "" "--enable-two-batch-overlap --tbo-min-tokens 2"; do
            echo "-- in $1 out $2 max-bs $3 $flags" | tee -a "$out/tbo.txt"
            $M -np 2 .gpupack/bin/dpa_serve bench --model /tmp/v2l --device cuda --dp 2 --ep 2 --num-prompts 512 \
              --max-num-seqs 256 --random-input-len $1 --random-output-len $2 --ep-exchange padded \
              --cuda-graph-max-bs $3 $flags 2>&1 | grep -E "token throughput|Median ITL|two-batch" | tee -a "$out/tbo.txt"
          done
        done
      fi ;;
    mla)  # MLA paged decode (issue 6, target 1): the many-head kernel's forms, checked, then timed
      [[ -x .gpupack/bin/mla_decode_bench ]] && .gpupack/bin/mla_decode_bench --kv bf16 --mma wgmma \
        --form seesaw,cp.async --reps 20 \
        --shapes 128x4096x128,128x4096x64,512x1536x128,64x2048x128,32x4096x128,1x4096x128,128x4096x16 2>&1 |
        tee "$out/mla_decode.txt"
      # The same launched back to back (the host's part of a call overlapped, as in a graph replay).
      [[ -x .gpupack/bin/mla_decode_bench ]] && .gpupack/bin/mla_decode_bench --kv bf16 --mma wgmma --reps 20 \
        --calls 10 --shapes 128x4096x128,512x1536x128 2>&1 | tee -a "$out/mla_decode.txt" ;;
    fallback)  # shapes no fused decode kernel takes (the tiny model's latent 32 + rope 8): checked, recorded
      # in a graph, and the tiny model's decode steps replayed from graphs (not "decode graphs off")
      [[ -x .gpupack/bin/test_backend_parity ]] && .gpupack/bin/test_backend_parity \
        --gtest_filter='*MlaDecode*:*MlaAbsorbed*' 2>&1 | grep -E "^\[  (PASSED|FAILED)|FAILED  \]" |
        tee "$out/fallback_parity.txt"
      [[ -f /tmp/tiny/config.json ]] || .gpupack/bin/dpa_serve make-model --preset tiny --output /tmp/tiny \
        --tokenizer-dir .gpupack/tok 2>&1 | tail -1
      $M -np 1 .gpupack/bin/dpa_serve bench --model /tmp/tiny --device cuda --num-prompts 256 --random-input-len 128 \
        --random-output-len 128 --max-num-seqs 128 2>&1 | grep -E "decode graphs|throughput|Median ITL" |
        tee "$out/fallback_tiny.txt" ;;
    scoring)  # prompt logprobs and response_format json_object on the GPU: the sample op's forced
      # rows (and ranks) against the CPU reference, then tests/serve/output_checks.py over HTTP on a
      # tiny model (prefill against decode logprobs within 5e-2: bf16 paths differ; the worst is printed)
      [[ -x .gpupack/bin/test_backend_parity ]] && .gpupack/bin/test_backend_parity --gtest_filter='*Sample*' 2>&1 |
        grep -E "^\[  (PASSED|FAILED)|FAILED  \]" | tee "$out/scoring_parity.txt"
      [[ -f /tmp/tiny/config.json ]] || .gpupack/bin/dpa_serve make-model --preset tiny --output /tmp/tiny \
        --tokenizer-dir .gpupack/tok 2>&1 | tail -1
      rm -f "$out/scoring.ready"
      $M -np 1 .gpupack/bin/dpa_serve serve --device cuda --model /tmp/tiny --port 0 --ready-file "$out/scoring.ready" \
        --reasoning-parser deepseek_r1 >"$out/scoring_server.log" 2>&1 &
      srv=$!
      for _ in $(seq 1 300); do [[ -s "$out/scoring.ready" ]] && break; sleep 0.2; done
      url=$(sed -n 's/^ready url=//p' "$out/scoring.ready")
      vocab=$(curl -s "$url/get_server_info" | python3 -c 'import json,sys; print(json.load(sys.stdin)["vocab_size"])')
      python3 tests/serve/output_checks.py prompt-logprobs "$url" x "$vocab" 5e-2 2>&1 | tail -3 | tee "$out/scoring.txt"
      python3 tests/serve/output_checks.py json-object "$url" x 2>&1 | tail -3 | tee -a "$out/scoring.txt"
      python3 tests/serve/output_checks.py choice "$url" x 2>&1 | tail -3 && echo "choice: ok" | tee -a "$out/scoring.txt"
      python3 tests/serve/output_checks.py regex "$url" x 2>&1 | tail -3 | tee -a "$out/scoring.txt"
      python3 tests/serve/output_checks.py restrict "$url" x 2>&1 | tail -3 | tee -a "$out/scoring.txt"
      if python3 -c "import jsonschema" 2>/dev/null; then
        python3 tests/serve/output_checks.py json-schema "$url" x 2>&1 | tail -3 | tee -a "$out/scoring.txt"
      else
        echo "json-schema: skipped (no python3 jsonschema here)" | tee -a "$out/scoring.txt"
      fi
      kill "$srv"; wait "$srv" ;;
    e2e)  # the end-to-end workload of the performance issue (target 5), one GPU
      [[ -f /tmp/v2l/config.json ]] || .gpupack/bin/dpa_serve make-model --preset v2-lite --output /tmp/v2l \
        --tokenizer-dir .gpupack/tok 2>&1 | tail -1
      $M -np 1 .gpupack/bin/dpa_serve bench --model /tmp/v2l --device cuda --num-prompts 512 --random-input-len 1024 \
        --random-output-len 1024 --max-num-seqs 512 2>&1 | grep -E "throughput|Median ITL" | tee "$out/e2e.txt" ;;
    e2e2)  # targets 5 and 6 on two GPUs: dp 2 / ep 2 against one GPU (same lease), start-up to ready
      if [[ $ngpu -ge 2 ]]; then
        [[ -f /tmp/v2l/config.json ]] || .gpupack/bin/dpa_serve make-model --preset v2-lite --output /tmp/v2l \
          --tokenizer-dir .gpupack/tok 2>&1 | tail -1
        # Start-up: mpirun to the ready line (the checkpoint in the page cache: it was just written
        # or read), then the reader against a cold sequential read of the same files.
        rm -f "$out/e2e2.ready"; t0=$(date +%s%N)
        $M -np 2 .gpupack/bin/dpa_serve serve --model /tmp/v2l --device cuda --dp 2 --ep 2 --port 0 \
          --ready-file "$out/e2e2.ready" >"$out/e2e2_server.log" 2>&1 &
        srv=$!
        for _ in $(seq 1 1200); do [[ -s "$out/e2e2.ready" ]] && break; sleep 0.1; done
        echo "start-up, 2 GPUs, dp 2 ep 2: $(( ($(date +%s%N) - t0) / 1000000 )) ms to ready" | tee "$out/e2e2.txt"
        kill -TERM "$srv"; wait "$srv"
        [[ -x .gpupack/bin/checkpoint_read_bench ]] && .gpupack/bin/checkpoint_read_bench --model /tmp/v2l 2>&1 |
          tail -4 | tee -a "$out/e2e2.txt"
        echo "-- one GPU, 512 x 1024/1024" | tee -a "$out/e2e2.txt"
        $M -np 1 .gpupack/bin/dpa_serve bench --model /tmp/v2l --device cuda --num-prompts 512 --random-input-len 1024 \
          --random-output-len 1024 --max-num-seqs 512 2>&1 | grep -E "throughput|Median ITL" | tee -a "$out/e2e2.txt"
        for ex in padded exact; do
          echo "-- two GPUs, dp 2 ep 2, 1024 x 1024/1024, --ep-exchange $ex" | tee -a "$out/e2e2.txt"
          $M -np 2 .gpupack/bin/dpa_serve bench --model /tmp/v2l --device cuda --dp 2 --ep 2 --num-prompts 1024 \
            --random-input-len 1024 --random-output-len 1024 --max-num-seqs 512 --ep-exchange $ex 2>&1 |
            grep -E "throughput|Median ITL|padded ep" | tee -a "$out/e2e2.txt"
        done
      fi ;;
    structured)  # what structured output and penalties cost a served step: the same requests with and without them
      [[ -f /tmp/v2l/config.json ]] || .gpupack/bin/dpa_serve make-model --preset v2-lite --output /tmp/v2l \
        --tokenizer-dir .gpupack/tok 2>&1 | tail -1
      rm -f "$out/structured.ready"
      $M -np 1 .gpupack/bin/dpa_serve serve --device cuda --model /tmp/v2l --port 0 --ready-file "$out/structured.ready" \
        >"$out/structured_server.log" 2>&1 &
      srv=$!
      for _ in $(seq 1 600); do [[ -s "$out/structured.ready" ]] && break; sleep 0.2; done
      url=$(sed -n 's/^ready url=//p' "$out/structured.ready")
      # guided_regex: a loop in one DFA state (its mask kept from step to step), and a counted
      # repeat (a new state, so a trie walk, every step). set -f: the patterns are not globbed.
      set -f
      for n in 128; do for rf in "" "--response-format json_object" "--guided-regex [a-z,.]*" \
                                    "--guided-regex [a-z,.]{1,1000}" "--frequency-penalty 0.5"; do
        echo "-- $n requests $rf" | tee -a "$out/structured.txt"
        .gpupack/bin/bench_serving --base-url "$url" --num-prompts $n --random-input-len 256 --random-output-len 256 $rf 2>&1 |
          grep -E "Failed|Output token throughput|Median ITL|Median TPOT" | tee -a "$out/structured.txt"
      done; done
      # guided_grammar: words (a loop: its mask kept, as the regex's), and nested parentheses (a new
      # state at every depth: walks while the nesting grows).
      for g in $'root ::= w (" " w)*\nw ::= [a-z]+' $'root ::= v+\nv ::= "(" v* ")" | [a-z ]'; do
        echo "-- 128 requests --guided-grammar $(printf %q "$g")" | tee -a "$out/structured.txt"
        .gpupack/bin/bench_serving --base-url "$url" --num-prompts 128 --random-input-len 256 --random-output-len 256 \
          --guided-grammar "$g" 2>&1 | grep -E "Failed|Output token throughput|Median ITL|Median TPOT" | tee -a "$out/structured.txt"
      done
      set +f
      kill "$srv"; wait "$srv"
      grep -oE "[0-9]+ decode steps overlapped.*|per step with a forward.*" "$out/structured_server.log" | tee -a "$out/structured.txt" ;;
    golden)
      if [[ -f tests/golden/make_fixtures.py ]]; then
        PYTHONUNBUFFERED=1 python3 tests/golden/make_fixtures.py "$out/fixtures" 2>&1 | tail -40
        (cd "$out" && tar czf fixtures.tgz fixtures && rm -rf fixtures && ls -la)
      fi ;;
  esac
done
