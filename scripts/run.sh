#!/usr/bin/env bash
# The main job on an embedded default, from a fresh machine: set-up, build, a synthetic DeepSeek-V2
# style model made on the fly (make-model --preset tiny, random weights, the real DeepSeek-V3
# tokenizer), then offline batch inference of inputs/sample_batch.jsonl under mpirun: two CPU
# ranks (dp 2, ep 2) where no GPU is present, one rank per GPU where GPUs are.
#   scripts/run.sh                  the batch job; output in build/sample_out.jsonl
#   scripts/run.sh bench            the offline throughput benchmark instead
#   scripts/run.sh serve            the OpenAI-compatible server on 127.0.0.1:${DPA_PORT:-8000}
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
"$root/scripts/setup.sh"
"$root/scripts/build.sh"
bin=$root/build/dpa_serve
model=$root/build/models/tiny
[[ -f $model/config.json ]] || "$bin" make-model --preset tiny --output "$model"
gpus=$(nvidia-smi -L 2>/dev/null | wc -l || true)
if [[ ${gpus:-0} -gt 0 ]]; then np=$gpus; device=cuda; else np=2; device=cpu; fi
launch=("$root/scripts/mpirun/launch.sh" -np "$np" -- "$bin")
case ${1:-batch} in
  batch)
    out=$root/build/sample_out.jsonl
    rm -f "$out"
    "${launch[@]}" batch --model "$model" --device "$device" --input "$root/inputs/sample_batch.jsonl" --output "$out"
    echo "--- $(wc -l <"$out") output lines in $out; the first one:"
    head -1 "$out"
    ;;
  bench)
    "${launch[@]}" bench --model "$model" --device "$device" --num-prompts 64 --random-input-len 128 --random-output-len 32
    ;;
  serve)
    # SIGTERM to rank 0 drains (in-flight requests finish) and every rank exits 0; Ctrl-C aborts via mpirun.
    "${launch[@]}" serve --model "$model" --device "$device" --port "${DPA_PORT:-8000}"
    ;;
  *) echo "usage: scripts/run.sh [batch|bench|serve]" >&2; exit 2 ;;
esac
