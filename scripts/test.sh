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
  # Hostile-input parsers (checkpoint reader, tokenizer) under ASan + UBSan, CPU-only build.
  DPA_BUILD_DIR="$root/build-asan" "$root/scripts/build.sh" -DDPA_SANITIZE=ON -DDPA_CUDA=OFF -DDPA_BUILD_PERF=OFF
  cd "$root/build-asan"
  ASAN_OPTIONS=detect_leaks=1 ctest --output-on-failure --timeout 900 -j "${DPA_TEST_JOBS:-2}" -L sanitize
fi
