#!/usr/bin/env bash
# The kernel-only CI legs, each in a venv of its own (docs/kernels.md):
#   jax0112       Python 3.12, jax 0.11.2 (the GPU machine's version): the kernel tests in
#                 interpret mode + cross-lowering for sm80/sm86/sm90 (pins: ci/constraints-jax0112.txt)
#   cuda-compile  Python 3.11, jax 0.10.2 + jax-cuda12-plugin + ptxas: compiles the head_dim 256
#                 bf16 kernels of every arch table to PTX and fails on spills, shared memory over
#                 the limit, or an unpipelined loop (pins: ci/constraints-cuda-compile.txt)
#   tpu-compile   Python 3.12, jax + libtpu: compiles, without a TPU, the forward with every TPU
#                 attention implementation and a distillation step for a one-host v5e-8 and a
#                 two-host v5p-16 slice (a 2-layer model; HBM checked at 24 layers) and fails
#                 on a compile error or an HBM overflow (pins: ci/constraints-tpu-compile.txt)
#   gpu-compile   the cuda-compile venv: the same for one host of 8 A100-80GB and two hosts of
#                 8 H100, with the GPU implementations (benchmarks/accelerator_compile.py)
# Usage: bash ci/kernel_legs.sh [jax0112|cuda-compile|tpu-compile|gpu-compile|all|setup] (default all;
# setup only creates the venvs)
# In "all", tpu-compile and gpu-compile run side by side (each compile is one core's work).
# Venvs: .venv-jax0112, .venv-cuda, .venv-tpu (created once, reused). The CUDA plugin and
# libtpu never enter the test legs' venvs: there every jax import would probe for them.
set -euo pipefail
cd "$(dirname "$0")/.."
export PIP_DISABLE_PIP_VERSION_CHECK=1 TOKENIZERS_PARALLELISM=false HF_HUB_OFFLINE=1
LEG="${1:-all}"

find_python() {  # find_python 3.12 -> a python of that version
  local v=$1 cand
  for cand in "python$v" "$(pyenv root 2>/dev/null)/versions/$v"*/bin/"python$v" \
              /usr/bin/"python$v" /usr/local/bin/"python$v"; do
    if "$cand" -c '' >/dev/null 2>&1; then echo "$cand"; return 0; fi
  done
  echo "python$v not found" >&2
  return 1
}

setup() {  # setup DIR PYTHON_VERSION CONSTRAINTS PACKAGES...
  local dir=$1 version=$2 cons=$3; shift 3
  if [ ! -x "$dir/bin/python" ]; then "$(find_python "$version")" -m venv "$dir"; fi
  "$dir/bin/python" -m pip install -q -c "$cons" "$@" -e .
}

# Each leg's venv, one home each (idempotent: a second call only checks the pins).
setup_jax0112() { setup .venv-jax0112 3.12 ci/constraints-jax0112.txt pytest; }
setup_cuda() {
  setup .venv-cuda 3.11 ci/constraints-cuda-compile.txt jax-cuda12-plugin jax-cuda12-pjrt \
    nvidia-cuda-nvcc-cu12
}
setup_tpu() { setup .venv-tpu 3.12 ci/constraints-tpu-compile.txt "jax[tpu]"; }

# Deviceless compiles of the real programs (docs/accelerators.md): one single-host and one
# two-host topology per platform; --check fails on a compile error or an HBM overflow.
compile_leg() {  # compile_leg tpu|gpu PYTHON TOPOLOGY...
  local platform=$1 py=$2; shift 2
  local topo=() t
  for t in "$@"; do topo+=(--topology "$t"); done
  "$py" benchmarks/accelerator_compile.py --platform "$platform" "${topo[@]}" --layers 2 \
    --shapes largest --programs forward,distill --distill-batch-per-chip 8 --check
}

tpu_compile() {
  local start=$SECONDS
  setup_tpu
  echo "== kernel leg tpu-compile: installed in $((SECONDS - start))s"
  start=$SECONDS
  local rc=0
  compile_leg tpu .venv-tpu/bin/python v5e-8 v5p-16 || rc=$?
  echo "== kernel leg tpu-compile: compiled in $((SECONDS - start))s (rc $rc)"
  return $rc
}

gpu_compile() {
  local start=$SECONDS
  setup_cuda
  echo "== kernel leg gpu-compile: installed in $((SECONDS - start))s"
  start=$SECONDS
  local rc=0
  compile_leg gpu .venv-cuda/bin/python a100x8 h100x16 || rc=$?
  echo "== kernel leg gpu-compile: compiled in $((SECONDS - start))s (rc $rc)"
  return $rc
}

status=0
# every kernel leg's venv (run_all.sh does this in the background during leg 1)
if [ "$LEG" = setup ]; then setup_jax0112; setup_cuda; setup_tpu; exit 0; fi
if [ "$LEG" = all ] || [ "$LEG" = jax0112 ]; then
  start=$SECONDS
  setup_jax0112
  echo "== kernel leg jax0112: installed in $((SECONDS - start))s;" \
    "$(.venv-jax0112/bin/python -c 'import jax,sys;print("python",sys.version.split()[0],"jax",jax.__version__)')"
  start=$SECONDS
  .venv-jax0112/bin/python -m pytest -q -m "not torch and not slow" tests/test_kernel_attention.py \
    tests/test_kernel_lowering.py tests/test_kernel_sharding.py || status=$?
  echo "== kernel leg jax0112: tests in $((SECONDS - start))s"
fi
if [ "$LEG" = all ] || [ "$LEG" = cuda-compile ]; then
  start=$SECONDS
  setup_cuda
  echo "== kernel leg cuda-compile: installed in $((SECONDS - start))s"
  start=$SECONDS
  JAX_SKIP_CUDA_CONSTRAINTS_CHECK=1 JAX_PLATFORMS=cpu .venv-cuda/bin/python \
    benchmarks/kernel_compile.py --dtype bfloat16 --head-dim 256 --check || status=$((status ? status : $?))
  echo "== kernel leg cuda-compile: compiled in $((SECONDS - start))s"
fi
if [ "$LEG" = tpu-compile ]; then tpu_compile || status=$((status ? status : $?)); fi
if [ "$LEG" = gpu-compile ]; then gpu_compile || status=$((status ? status : $?)); fi
if [ "$LEG" = all ]; then
  # Side by side, each into its own log (printed whole afterwards, not interleaved).
  logs=$(mktemp -d)
  start=$SECONDS
  tpu_compile >"$logs/tpu" 2>&1 & tpu_pid=$!
  gpu_compile >"$logs/gpu" 2>&1 & gpu_pid=$!
  wait "$tpu_pid" || status=$((status ? status : $?))
  wait "$gpu_pid" || status=$((status ? status : $?))
  cat "$logs/tpu" "$logs/gpu"
  rm -r "$logs"
  echo "== kernel legs tpu-compile + gpu-compile (side by side): $((SECONDS - start))s"
fi
exit $status
