#!/usr/bin/env bash
# Single-node launcher: one rank per GPU (or NP ranks on the CPU), ranks bound to cores.
#   scripts/mpirun/launch.sh [-np N] [--hostfile F] -- dpa_serve ARGS...
#   scripts/mpirun/launch.sh info --dp 2            (the binary defaults to build/dpa_serve)
# N defaults to the number of GPUs, or 2 on a machine without GPUs (then --device cpu).
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
source "$root/scripts/env.sh"
np=""; hostfile=()
while [[ $# -gt 0 ]]; do
  case $1 in
    -np|-n) np=$2; shift 2 ;;
    --hostfile) hostfile=(--hostfile "$2"); shift 2 ;;
    --) shift; break ;;
    *) break ;;
  esac
done
bin=${DPA_SERVE:-$root/build/dpa_serve}
if [[ ${1:-} == */dpa_serve || ${1:-} == dpa_serve ]]; then bin=$1; shift; fi
gpus=$(nvidia-smi -L 2>/dev/null | wc -l) || gpus=0  # pipefail: no nvidia-smi means 0
if [[ -z $np ]]; then np=$(( gpus > 0 ? gpus : 2 )); fi
extra=()
[[ $gpus -eq 0 ]] && extra=(--oversubscribe)
[[ $(id -u) -eq 0 ]] && extra+=(--allow-run-as-root)
fwd=(); for v in $DPA_FORWARD_ENV; do [[ -n ${!v:-} ]] && fwd+=(-x "$v"); done
# With GPUs: one rank per GPU, each bound to the cores of one socket share; without: no binding.
bind=(--bind-to none)
[[ $gpus -gt 0 ]] && bind=(--map-by ppr:"$np":node:pe=$(( $(nproc) / np > 0 ? $(nproc) / np : 1 )) --bind-to core)
exec mpirun -np "$np" "${hostfile[@]}" "${bind[@]}" "${extra[@]}" "${fwd[@]}" "$bin" "$@"
