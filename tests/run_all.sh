#!/usr/bin/env bash
# Set up both test environments (idempotent) and run the whole suite:
#   leg 1: Python 3.11, jax 0.10.2, CPU torch + transformers + sentence-transformers (everything)
#   leg 2: Python 3.12, newer pinned jax, torch-free tests (-m "not torch and not slow": the few
#          slowest ones, e.g. the 8-device sharding run, are left to leg 1 for the time budget)
# Lint first (ruff, seconds), then both legs.
# Usage: bash tests/run_all.sh [extra pytest args]
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
export PIP_DISABLE_PIP_VERSION_CHECK=1 TOKENIZERS_PARALLELISM=false HF_HUB_OFFLINE=1

find_python() {  # find_python 3.11 -> a python of that version (pyenv shims may hide it)
  local v=$1 cand
  for cand in "python$v" "$(pyenv root 2>/dev/null)/versions/$v"*/bin/"python$v" \
              /usr/bin/"python$v" /usr/local/bin/"python$v"; do
    if "$cand" -c '' >/dev/null 2>&1; then echo "$cand"; return 0; fi
  done
  return 1
}

setup_venv() {  # setup_venv DIR PYTHON CONSTRAINTS EXTRAS WITH_TORCH
  local dir=$1 py=$2 cons=$3 extras=$4 torch=$5
  if [ ! -x "$dir/bin/python" ]; then "$py" -m venv "$dir"; fi
  "$dir/bin/python" -m pip install -q --upgrade pip
  if [ "$torch" = yes ]; then
    # A CPU build on purpose: a bare `torch` requirement would pull a multi-GB CUDA build.
    "$dir/bin/python" -m pip install -q torch==2.13.0 \
      || "$dir/bin/python" -m pip install -q torch==2.13.0 --index-url https://download.pytorch.org/whl/cpu
  fi
  "$dir/bin/python" -m pip install -q -c "$cons" -e ".[$extras]"
}

PY311=$(find_python 3.11) || { echo "python3.11 not found" >&2; exit 1; }
PY312=$(find_python 3.12) || { echo "python3.12 not found" >&2; exit 1; }

echo "== setting up leg 1 (Python 3.11, jax 0.10.2, PyTorch reference)"
setup_venv "$ROOT/.venv" "$PY311" ci/constraints-py311.txt test,train,mteb,serve yes
# Leg 2's venv and then the kernel legs' venvs install in the background while leg 1 runs
# (mostly downloads: ~2 GB on a cold pip cache, libtpu and the CUDA compiler among them). One
# after another, never beside leg 1's install: each editable install rewrites tarka_jax.egg-info.
SETUP_LOG=$(mktemp)
trap 'rm -f "$SETUP_LOG"' EXIT
{ echo "-- leg 2 (Python 3.12, newer jax, torch-free)"
  setup_venv "$ROOT/.venv312" "$PY312" ci/constraints-py312.txt test-light,train,serve no
  echo "-- kernel legs"; bash ci/kernel_legs.sh setup; } >"$SETUP_LOG" 2>&1 &
background_setup=$!
echo "== ruff check (pinned in the test extras)"
"$ROOT/.venv/bin/ruff" check .

# Two pytest-xdist workers (whole files per worker, so module fixtures are built once):
# most of a test's time is single-threaded (compiles, imports, subprocess start-up), so two
# workers on two cores roughly halve the wall time. TARKA_JAX_TEST_WORKERS=0 runs serially.
WORKERS=(-n "${TARKA_JAX_TEST_WORKERS:-2}" --dist loadfile)
status=0
took() { echo "== $1: $((SECONDS - $2))s"; }  # each leg's wall time (CI budget: ~45 min in all)
start=$SECONDS
echo "== leg 1: $("$ROOT/.venv/bin/python" -c 'import jax,sys;print("python",sys.version.split()[0],"jax",jax.__version__)')"
"$ROOT/.venv/bin/python" -m pytest -q "${WORKERS[@]}" --durations=25 "$@" || status=$?
took "leg 1 took" $start
setup_rc=0; wait $background_setup || setup_rc=$?
echo "== background install of leg 2 and the kernel legs (rc $setup_rc):"; cat "$SETUP_LOG"
[ $setup_rc -eq 0 ] || exit $setup_rc
start=$SECONDS
echo "== leg 2: $("$ROOT/.venv312/bin/python" -c 'import jax,sys;print("python",sys.version.split()[0],"jax",jax.__version__)')"
"$ROOT/.venv312/bin/python" -m pytest -q "${WORKERS[@]}" --durations=15 -m "not torch and not slow" "$@" || status=$((status ? status : $?))
took "leg 2 took" $start; start=$SECONDS
echo "== kernel legs (jax 0.11.2 kernels; PTX compile report of the GPU tables; TPU and GPU programs compiled without the hardware)"
bash ci/kernel_legs.sh all || status=$((status ? status : $?))
took "kernel legs took" $start
exit $status
