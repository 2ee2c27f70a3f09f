#!/usr/bin/env bash
# One command for a GPU box (no network): kernel tests compiled for the GPU, real-size checks,
# attention timings against XLA / cuDNN / PyTorch SDPA / FlexAttention, one summary table.
#
#   benchmarks/gpu_check.sh [--dry-run] RESULTS_DIR      (or DRY_RUN=1 benchmarks/gpu_check.sh DIR)
#
# Environment: SWEEP=1 also times a few block configurations (to freeze kernels/block_sizes.py);
# LAYERS=window,full restricts the timed layers; DEADLINE_S (default 540) is the wall-clock budget:
# a step that would start after it is skipped, and each step is capped by what is left.
# --dry-run: CPU only, tiny sizes, Pallas in interpret mode, no pip install and no pytest
# (tests/test_kernel_gpu_check_dry.py runs this path in CI).
# Outputs in RESULTS_DIR: env.txt, pytest_kernels.xml, checks_jax.json, attention_jax.json,
# attention_torch.json, [sweep_jax.json], train_mfu.json, summary.json, table.txt, log_*.txt.
set -uo pipefail

DRY_RUN="${DRY_RUN:-0}"
RESULTS_DIR=""
for arg in "$@"; do
  case "$arg" in
    --dry-run) DRY_RUN=1 ;;
    -h|--help) sed -n '2,13p' "$0"; exit 0 ;;
    *) RESULTS_DIR="$arg" ;;
  esac
done
if [ -z "$RESULTS_DIR" ]; then
  echo "usage: $0 [--dry-run] RESULTS_DIR" >&2
  exit 2
fi
mkdir -p "$RESULTS_DIR"
RESULTS_DIR="$(cd "$RESULTS_DIR" && pwd)"
cd "$(dirname "$0")/.."
PY="${PYTHON:-python}"
DEADLINE_S="${DEADLINE_S:-540}"
export DRY_RUN TOKENIZERS_PARALLELISM=false HF_HUB_OFFLINE=1
DRY_FLAG=()
if [ "$DRY_RUN" = "1" ]; then
  DRY_FLAG=(--dry-run)
  export JAX_PLATFORMS=cpu
fi
STATUS=0

# step NAME CAP_SECONDS command...: run with a timeout of min(CAP, time left); log to log_NAME.txt.
step() {
  local name="$1" cap="$2"; shift 2
  local left=$((DEADLINE_S - SECONDS))
  if [ "$left" -lt 20 ]; then
    echo "== $name: skipped (deadline ${DEADLINE_S}s reached)"
    return 0
  fi
  [ "$cap" -gt "$left" ] && cap="$left"
  echo "== $name (cap ${cap}s, t=${SECONDS}s)"
  timeout --kill-after=10 "$cap" "$@" 2>&1 | tee "$RESULTS_DIR/log_$name.txt"
  local rc="${PIPESTATUS[0]}"
  if [ "$rc" -ne 0 ]; then
    echo "== $name: exit $rc"
    STATUS=1
  fi
}

# -- 0. install the checkout and record the environment -----------------------------------------
if [ "$DRY_RUN" != "1" ]; then
  "$PY" -m pip install --no-build-isolation --no-deps -q -e . > "$RESULTS_DIR/log_pip.txt" 2>&1 \
    || { echo "pip install failed (see log_pip.txt)"; STATUS=1; }
fi
{
  date -u +"%Y-%m-%dT%H:%M:%SZ"
  git rev-parse HEAD 2>/dev/null || true
  command -v nvidia-smi > /dev/null && nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader
  "$PY" -c "import jax, jaxlib; print('jax', jax.__version__, jax.devices())" 2>&1 | tail -1
  "$PY" -c "import torch; print('torch', torch.__version__)" 2>&1 | tail -1
} > "$RESULTS_DIR/env.txt"
cat "$RESULTS_DIR/env.txt"

# -- 1. the kernel test suite, compiled for the GPU (interpret mode is CPU-only) ------------------
if [ "$DRY_RUN" != "1" ]; then
  step pytest_kernels 150 "$PY" -m pytest -q -p no:cacheprovider \
    tests/test_kernel_attention.py tests/test_kernel_lowering.py \
    --junitxml="$RESULTS_DIR/pytest_kernels.xml"
fi

# -- 2. real sizes (B*T = 32*2048, head_dim 256, bf16) vs XLA in float32 -----------------------------
step check 120 "$PY" benchmarks/gpu_attention.py check "$RESULTS_DIR" "${DRY_FLAG[@]}"

# -- 3. timings: JAX (pallas_triton, XLA, cuDNN), then PyTorch in its own process --------------------
SWEEP_FLAG=()
[ "${SWEEP:-0}" = "1" ] && SWEEP_FLAG=(--sweep)
BUDGET_S="${BUDGET_S_JAX:-200}" step bench_jax 260 \
  "$PY" benchmarks/gpu_attention.py bench "$RESULTS_DIR" "${DRY_FLAG[@]}" "${SWEEP_FLAG[@]}"
BUDGET_S="${BUDGET_S_TORCH:-140}" step bench_torch 180 \
  "$PY" benchmarks/gpu_torch_attention.py "$RESULTS_DIR" "${DRY_FLAG[@]}"

# -- 3b. TRAIN-STEP MFU (issue 5): Tarka student + online EmbeddingGemma-shaped teacher, bf16, ---
# seq 512, vs the bf16 matmul rate measured in the same process. Writes train_mfu.json.
# Owned by the recipe work (benchmarks/gpu_train_mfu.py); capped at 90 s, timing stops at 60 s.
BUDGET_S="${BUDGET_S_TRAIN:-60}" step train_mfu 90 \
  "$PY" benchmarks/gpu_train_mfu.py "$RESULTS_DIR" "${DRY_FLAG[@]}"

# -- 4. END-TO-END HOOK: Embedder.encode_document vs sentence-transformers --------------------------
# Owned by the model/inference work: benchmarks/gpu_e2e.py RESULTS_DIR [--dry-run] should write
# RESULTS_DIR/e2e.json (tokens/s, ratios) and print its own lines. Skipped while it does not exist.
if [ -f benchmarks/gpu_e2e.py ]; then
  step e2e 180 "$PY" benchmarks/gpu_e2e.py "$RESULTS_DIR" "${DRY_FLAG[@]}"
else
  echo "== e2e: benchmarks/gpu_e2e.py not present yet, skipped"
fi

# -- 5. one table ---------------------------------------------------------------------------------
step report 30 "$PY" benchmarks/gpu_attention.py report "$RESULTS_DIR"
echo "== done in ${SECONDS}s, status $STATUS; raw results in $RESULTS_DIR"
exit "$STATUS"
