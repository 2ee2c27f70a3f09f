#!/usr/bin/env bash
# One command for a GPU box (no network), <= 5 minutes on an H200, fail-fast:
#   versions -> compile (B=32, T=2048; window and full; this GPU's table and sm80's) ->
#   correctness vs float32 XLA -> kernel tests compiled on the GPU -> timings vs xla,
#   xla_blocked (if the dispatcher has it) and cuDNN -> end-to-end and train-MFU rows ->
#   PyTorch SDPA/FlexAttention timings -> a short block-size sweep, only if time is left.
#
#   benchmarks/gpu_check.sh [--dry-run] RESULTS_DIR      (or DRY_RUN=1 benchmarks/gpu_check.sh DIR)
#
# Environment: DEADLINE_S (default 290) is the wall-clock budget: a step that would start after it
# is skipped and each step is capped by what is left. SWEEP=0 never sweeps (the dry run's
# default); LAYERS=window,full restricts the timed layers (default window,full,window_padded).
# --dry-run: CPU only, tiny sizes, Pallas in interpret mode, no pip install and no pytest
# (tests/test_kernel_gpu_check_dry.py runs this path in CI).
# Outputs in RESULTS_DIR: env.txt, compile_jax.json, checks_jax.json, pytest_kernels.xml,
# attention_jax.json, e2e.json, train_mfu.json, attention_torch.json, [sweep_jax.json],
# summary.json, table.txt, log_*.txt. Exit status 1 if any step failed.
set -uo pipefail

DRY_RUN="${DRY_RUN:-0}"
RESULTS_DIR=""
for arg in "$@"; do
  case "$arg" in
    --dry-run) DRY_RUN=1 ;;
    -h|--help) sed -n '2,17p' "$0"; exit 0 ;;
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
DEADLINE_S="${DEADLINE_S:-290}"
export DRY_RUN TOKENIZERS_PARALLELISM=false HF_HUB_OFFLINE=1
DRY_FLAG=()
if [ "$DRY_RUN" = "1" ]; then
  DRY_FLAG=(--dry-run)
  export JAX_PLATFORMS=cpu
else
  export LAYERS="${LAYERS:-window,full,window_padded}"
fi
STATUS=0
LAST_RC=0
# Per-script timing budgets (seconds) on the GPU; a CPU dry run only has the overall deadline.
budget() { if [ "$DRY_RUN" = "1" ]; then echo "$DEADLINE_S"; else echo "$1"; fi; }

# step NAME CAP_SECONDS command...: run with a timeout of min(CAP, time left); log to log_NAME.txt.
step() {
  local name="$1" cap="$2"; shift 2
  local left=$((DEADLINE_S - SECONDS))
  if [ "$left" -lt 15 ]; then
    echo "== $name: skipped (deadline ${DEADLINE_S}s reached)"
    return 0
  fi
  # Caps are sized for an H200; a CPU dry run only has the overall deadline.
  if [ "$cap" -gt "$left" ] || [ "$DRY_RUN" = "1" ]; then cap="$left"; fi
  echo "== $name (cap ${cap}s, t=${SECONDS}s)"
  timeout --kill-after=5 "$cap" "$@" 2>&1 | tee "$RESULTS_DIR/log_$name.txt"
  local rc="${PIPESTATUS[0]}"
  LAST_RC=$rc
  if [ "$rc" -ne 0 ]; then
    echo "== $name: exit $rc"
    STATUS=1
    return 1
  fi
}

# must NAME CAP command...: a step whose failure makes everything after it meaningless
# (running out of its time cap is recorded as a failure but does not stop the script).
must() {
  if ! step "$@" && [ "$LAST_RC" -ne 124 ] && [ "$LAST_RC" -ne 137 ]; then
    echo "== stopped after $1 failed (t=${SECONDS}s); see $RESULTS_DIR/log_$1.txt"
    exit 1
  fi
}

# -- 1. install the checkout, record versions (fail-fast: no usable jax / GPU / Triton) ----------
if [ "$DRY_RUN" != "1" ]; then
  "$PY" -m pip install --no-build-isolation --no-deps -q -e . > "$RESULTS_DIR/log_pip.txt" 2>&1 \
    || { echo "pip install failed (see log_pip.txt)"; exit 1; }
fi
{
  date -u +"%Y-%m-%dT%H:%M:%SZ"
  git rev-parse HEAD 2>/dev/null || true
  command -v nvidia-smi > /dev/null && nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader
  "$PY" -c "import torch; print('torch', torch.__version__)" 2>&1 | tail -1
} > "$RESULTS_DIR/env.txt"
must versions 60 "$PY" - "${DRY_FLAG[@]}" <<'EOF'
import importlib.util, sys
import jax, jaxlib
print("python", sys.version.split()[0], "jax", jax.__version__, "jaxlib", jaxlib.__version__)
print("devices", jax.devices())
from tarka_jax.kernels import available_implementations, gpu_arch
print("implementations", available_implementations())
print("optional (imported lazily):", {m: importlib.util.find_spec(m) is not None
                                      for m in ("grain", "pyarrow", "mteb", "tokamax", "torch")})
gpu_arch.check_triton_backend()
if "--dry-run" not in sys.argv:
    print("arch table", gpu_arch.device_arch())
EOF
cat "$RESULTS_DIR/log_versions.txt" >> "$RESULTS_DIR/env.txt"

# -- 2. compile at real size, then correctness vs float32 XLA, then the kernel tests --------------
must compile 60 "$PY" benchmarks/gpu_attention.py compile "$RESULTS_DIR" "${DRY_FLAG[@]}"
must check 60 "$PY" benchmarks/gpu_attention.py check "$RESULTS_DIR" "${DRY_FLAG[@]}"
if [ "$DRY_RUN" != "1" ]; then
  must pytest_kernels 90 "$PY" -m pytest -q -x -p no:cacheprovider -m "not slow" \
    tests/test_kernel_attention.py tests/test_kernel_lowering.py \
    --junitxml="$RESULTS_DIR/pytest_kernels.xml"
fi

# -- 3. timings: pallas_triton vs xla, xla_blocked, cuDNN ------------------------------------------
BUDGET_S="${BUDGET_S_JAX:-$(budget 45)}" step bench_jax 60 \
  "$PY" benchmarks/gpu_attention.py bench "$RESULTS_DIR" "${DRY_FLAG[@]}"

# -- 4. end-to-end (Embedder vs sentence-transformers) and train-step MFU ------------------------
if [ -f benchmarks/gpu_e2e.py ]; then
  step e2e 45 "$PY" benchmarks/gpu_e2e.py "$RESULTS_DIR" "${DRY_FLAG[@]}"
fi
BUDGET_S="${BUDGET_S_TRAIN:-$(budget 25)}" step train_mfu 40 \
  "$PY" benchmarks/gpu_train_mfu.py "$RESULTS_DIR" "${DRY_FLAG[@]}"

# -- 5. PyTorch baselines, then a short block-size sweep while time is left ------------------------
BUDGET_S="${BUDGET_S_TORCH:-$(budget 25)}" step bench_torch 40 \
  "$PY" benchmarks/gpu_torch_attention.py "$RESULTS_DIR" "${DRY_FLAG[@]}"
if [ "${SWEEP:-$((1 - DRY_RUN))}" = "1" ] && [ $((DEADLINE_S - SECONDS)) -gt 45 ]; then
  BUDGET_S=$((DEADLINE_S - SECONDS - 25)) step sweep 60 \
    "$PY" benchmarks/gpu_attention.py sweep "$RESULTS_DIR" "${DRY_FLAG[@]}"
fi

# -- 6. one table ---------------------------------------------------------------------------------
step report 20 "$PY" benchmarks/gpu_attention.py report "$RESULTS_DIR"
echo "== done in ${SECONDS}s, status $STATUS; raw results in $RESULTS_DIR"
exit "$STATUS"
