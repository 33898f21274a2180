#!/usr/bin/env bash
# One device check on a machine with an NVIDIA GPU: builds with CUDA for sm_90, runs the
# GPU-marked tests and GPU benchmarks, and prints a short table last. Full logs go to $OUT.
#   bash benchmarks/device_check.sh            (OUT defaults to /tmp/pyperfcore-device)
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-/tmp/pyperfcore-device}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1
PY=${PYTHON:-python3}

# Build requirements the machine may lack (no network there): carried as wheels in .whl/.
if [ -d .whl ] && ls .whl/*.whl >/dev/null 2>&1; then
  $PY -m pip install -q --no-index --no-deps --no-compile --upgrade --target /tmp/pfc-site .whl/*.whl || exit 1
  export PYTHONPATH=/tmp/pfc-site${PYTHONPATH:+:$PYTHONPATH}
fi
nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.sm --format=csv | tee "$OUT/gpu.txt"

echo "=== build (PYPERFCORE_CUDA=ON, sm_90)"
start=$(date +%s)
PYPERFCORE_CUDA=ON PYPERFCORE_CUDA_ARCHS=90 $PY -m pip install -q --no-build-isolation --no-deps \
  -C build-dir=build/gpu -e . >"$OUT/build.log" 2>&1 || { tail -40 "$OUT/build.log"; exit 1; }
echo "built in $(( $(date +%s) - start )) s"
$PY -m pyperfcore info | tee "$OUT/info.txt"

# Time limits keep the table at the end even if a phase runs long (set 0 to disable).
TEST_TIMEOUT=${TEST_TIMEOUT:-0}
BENCH_TIMEOUT=${BENCH_TIMEOUT:-0}
XDIST=""
$PY -c "import xdist" 2>/dev/null && XDIST="-n ${XDIST_WORKERS:-4}"

PHASES=${PHASES:-tests,sweeps,bench}
SWEEP_TIMEOUT=${SWEEP_TIMEOUT:-200}  # the quant sweep stops itself after 110 s (+30 s watchdog)
tests_rc=0
bench_rc=0

if [[ ",$PHASES," == *",sweeps,"* ]]; then
  # Standalone sweeps: every tuning candidate and the peers, timed with CUDA events.
  for s in benchmarks/gpu_sweep_*.py; do
    [ -f "$s" ] || continue
    echo "=== sweep $s"
    timeout --signal=INT "$SWEEP_TIMEOUT" $PY "$s" 2>&1 | tee "$OUT/$(basename "$s" .py).log" | tail -60
  done
fi

if [[ ",$PHASES," == *",tests,"* ]]; then
echo "=== GPU tests"
timeout --signal=INT "$TEST_TIMEOUT" $PY -m pytest tests -m "cuda or gpu or triton" $XDIST -q -p no:cacheprovider --maxfail=10 --no-header -rs \
  2>&1 | tee "$OUT/tests.log" | tail -25
tests_rc=${PIPESTATUS[0]}
fi

if [[ ",$PHASES," == *",bench,"* ]]; then
echo "=== GPU benchmarks"
timeout --signal=INT "$BENCH_TIMEOUT" $PY -m pytest benchmarks -m "gpu or cuda" --benchmark-only -q -p no:cacheprovider --no-header \
  --benchmark-json="$OUT/bench.json" >"$OUT/bench.log" 2>&1
bench_rc=$?
tail -5 "$OUT/bench.log"
fi

echo "=== summary ($(head -2 "$OUT/gpu.txt" | tail -1))"
$PY benchmarks/device_table.py "$OUT/bench.json"
echo "tests rc=$tests_rc bench rc=$bench_rc"
exit $(( tests_rc != 0 || bench_rc != 0 ))
