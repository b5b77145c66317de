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
  # engine's wire format, JSON schemas, regex patterns, grammars and the structured-output recognizers)
  # again under AddressSanitizer + UndefinedBehaviorSanitizer.
  asan="$root/build-asan"
  cmake -S "$root" -B "$asan" -G Ninja -DDPA_SANITIZE=ON -DDPA_CUDA=OFF -DDPA_BUILD_PERF=OFF >"$asan.configure.log" 2>&1 \
    || { cat "$asan.configure.log"; exit 1; }
  ninja -C "$asan" -j "${DPA_JOBS:-$(nproc)}" model_checkpoint tokenizer_unit tokenizer_oracle_compare chat_template_unit \
    chat_template_vs_jinja2 engine_sampler engine_json_schema engine_regex engine_regex_syntax engine_compile_cache engine_json_schema_cases engine_structured_output \
    engine_grammar
  cd "$asan"
  ASAN_OPTIONS=detect_leaks=1 ctest --output-on-failure --timeout 900 -j "${DPA_TEST_JOBS:-2}" \
    -R '^(model_checkpoint|tokenizer_.*|chat_template_.*|engine_sampler|engine_json_schema|engine_json_schema_cases|engine_regex|engine_regex_syntax|engine_compile_cache|engine_structured_output|engine_grammar)$'
fi
if [[ $# -eq 0 && ${DPA_SKIP_FUZZ:-0} != 1 ]]; then
  # The libFuzzer harnesses of tests/fuzz (clang 14, ASan + UBSan), each for a short run over its
  # seed corpus: a crash, a sanitizer report, a timeout or an out-of-memory fails the suite.
  fuzz="$root/build-fuzz"
  CC=clang-14 CXX=clang++-14 cmake -S "$root" -B "$fuzz" -G Ninja -DDPA_FUZZ=ON -DDPA_CUDA=OFF -DDPA_BUILD_PERF=OFF \
    -DDPA_BUILD_TESTS=ON >"$fuzz.configure.log" 2>&1 || { cat "$fuzz.configure.log"; exit 1; }
  ninja -C "$fuzz" -j "${DPA_JOBS:-$(nproc)}" dpa_fuzzers
  rm -rf "$fuzz/runs"; mkdir -p "$fuzz/runs"
  printf '%s\n' fuzz_http_request fuzz_tokenizer fuzz_chat_template fuzz_checkpoint_header fuzz_batch_line \
    fuzz_json_schema fuzz_regex fuzz_grammar |
    xargs -P "${DPA_TEST_JOBS:-2}" -I{} bash -c '
      mkdir -p "$0/runs/{}/corpus" && cd "$0/runs/{}" &&
      "$0/tests/fuzz/{}" -seed=1 -max_total_time="${DPA_FUZZ_SECONDS:-20}" -timeout=10 -rss_limit_mb=2048 \
        -artifact_prefix="$0/runs/{}/" corpus "$1/tests/fuzz/corpus/{}" >log 2>&1 \
        && echo "fuzz: {} $(grep -o "Done [0-9]* runs" log)" \
        || { echo "fuzz: {} FAILED"; tail -60 log; exit 255; }' "$fuzz" "$root"
fi
