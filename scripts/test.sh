#!/usr/bin/env bash
# The whole test suite from a fresh machine: set-up, configure, build, ctest. Then the reader
# tests again in an AddressSanitizer + UndefinedBehaviorSanitizer build.
#   scripts/test.sh            everything
#   scripts/test.sh -L unit    extra arguments go to ctest
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
"$root/scripts/setup.sh"
"$root/scripts/build.sh"
cd "$root/build"
ctest --output-on-failure --timeout 900 -j "${DPA_TEST_JOBS:-2}" "$@"
if [[ $# -eq 0 && ${DPA_SKIP_ASAN:-0} != 1 ]]; then
  # The parsers of hostile input (checkpoint reader and config, tokenizer, chat templates, the
  # engine's wire format) again under AddressSanitizer + UndefinedBehaviorSanitizer.
  asan="$root/build-asan"
  cmake -S "$root" -B "$asan" -G Ninja -DDPA_SANITIZE=ON -DDPA_CUDA=OFF -DDPA_BUILD_PERF=OFF >"$asan.configure.log" 2>&1 \
    || { cat "$asan.configure.log"; exit 1; }
  ninja -C "$asan" -j "${DPA_JOBS:-$(nproc)}" model_checkpoint tokenizer_unit tokenizer_oracle_compare chat_template_unit \
    chat_template_vs_jinja2 engine_sampler
  cd "$asan"
  ASAN_OPTIONS=detect_leaks=1 ctest --output-on-failure --timeout 900 -j "${DPA_TEST_JOBS:-2}" \
    -R '^(model_checkpoint|tokenizer_.*|chat_template_.*|engine_sampler)$'
fi
