#!/usr/bin/env bash
# Configures and builds into build/ (or $DPA_BUILD_DIR). Extra arguments go to cmake.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
build=${DPA_BUILD_DIR:-$root/build}
jobs=${DPA_JOBS:-$(nproc)}
cmake -S "$root" -B "$build" -G Ninja "$@" >"$build.configure.log" 2>&1 || { cat "$build.configure.log"; exit 1; }
grep -E "^-- dpa_serve:" "$build.configure.log" || true
ninja -C "$build" -j "$jobs"
