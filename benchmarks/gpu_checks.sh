#!/usr/bin/env bash
# The GPU checks of the reproduction (issue 6), as one prepared command for a short loan.
#
#   OUT=DIR bash benchmarks/gpu_checks.sh MNIST_DIR [BUDGET_S]
#
# Runs, each under a timeout drawn from BUDGET_S (default 560 s) and each logged to a file
# in OUT, whatever the steps before it did:
#   1. the unit tests that need or name CUDA or the device a model goes to;
#   2. benchmarks/cuda_check.py, every case: graphed against eager training, adversarial
#      fine-tuning and the tangent term included;
#   3. `contractive reproduce rifai2011` with the defaults, timed (the default run's time);
#   4. the same folder resumed with --finetune-seeds 3 (seeds 1 and 2 of each configuration,
#      one after another; the pre-trained models and seed 0 are kept; with --jobs 3 on an
#      H200 a fine-tuning took 0.54 s an epoch against 0.19 s alone, no gain);
#   5. the whole test suite with CUDA present (pytest-xdist), if time is left;
# then packs the run folder without its weights (*.safetensors) into OUT/run.tgz.
# On an H200 step 3 takes about 6 minutes and step 4 about 9-10, so with the 600 s a command
# may run on a loaned machine, steps 4 and 5 need a call of their own on the same warm
# machine (STEPS="seeds pytest_all"; RUN_DIR is kept there between calls).
# summary.txt has each step's exit status and seconds. PYTHON (default python3), DEVICE
# (default cuda), EXTRA (more reproduce options, e.g. --quick for a rehearsal), RUN_DIR (the
# run folder, default /tmp/rifai2011-gpu: a warm machine keeps it between calls) and STEPS
# (the steps to run, default "pytest_cuda cuda_check reproduce seeds pytest_all") may be set.
set -u
DATA=$(realpath "${1:?usage: OUT=DIR $0 MNIST_DIR [BUDGET_S]}") || exit 2
BUDGET=${2:-560}
[[ -d $DATA ]] || { echo "gpu_checks: $1: not a folder (the MNIST files' folder)" >&2; exit 2; }
[[ $BUDGET =~ ^[0-9]+$ ]] || { echo "gpu_checks: BUDGET_S '$BUDGET' is not a whole number of seconds" >&2; exit 2; }
OUT=$(realpath -m "${OUT:?set OUT to the folder for the logs}")
PY=${PYTHON:-python3}
[[ $PY == */* && $PY != /* ]] && PY="$PWD/$PY"  # (a venv's python: not resolved)
cd "$(dirname "$0")/.." || exit 2  # the repository root
DEVICE=${DEVICE:-cuda}
EXTRA=${EXTRA:-}
RUN=${RUN_DIR:-/tmp/rifai2011-gpu}
STEPS=${STEPS:-pytest_cuda cuda_check reproduce seeds pytest_all}
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
mkdir -p "$OUT"
SECONDS=0

left() { echo $((BUDGET - SECONDS)); }

step() {  # step NAME RESERVE_S MAX_S CMD...: runs CMD for at most min(MAX_S, left - RESERVE_S)
    local name=$1 reserve=$2 most=$3 t
    shift 3
    [[ " $STEPS " == *" $name "* ]] || return 0
    t=$(($(left) - reserve))
    ((t > most)) && t=$most
    if ((t < 20)); then
        echo "== $name: skipped, $t s left for it" | tee -a "$OUT/summary.txt"
        return
    fi
    local t0=$SECONDS
    # timeout signals the command's whole process group (a reproduction's workers too)
    timeout --kill-after=10 "$t" "$@" >"$OUT/$name.txt" 2>&1
    local rc=$?
    echo "== $name: exit $rc after $((SECONDS - t0)) s (limit $t s)" | tee -a "$OUT/summary.txt"
    tail -n 4 "$OUT/$name.txt"
}

{
    date -u
    nvidia-smi --query-gpu=name,driver_version,memory.used,memory.total --format=csv 2>&1
    "$PY" -c "import torch, sys; print(sys.version.split()[0], torch.__version__,
torch.cuda.is_available() and torch.cuda.get_device_name(0))" 2>&1
    nproc
} | tee "$OUT/summary.txt"

step pytest_cuda 400 120 "$PY" -m pytest -q -rs -p no:cacheprovider \
    tests/test_fastpath.py tests/test_training.py tests/test_adam.py tests/test_cli.py \
    tests/test_estimator.py tests/test_classifier.py \
    -k "cuda or gpu or gather_moves or draw_dropout or unpickled or device_or_cpu"
step cuda_check 380 120 "$PY" benchmarks/cuda_check.py --data-dir "$DATA"
# shellcheck disable=SC2086  # EXTRA is a list of options
step reproduce 90 480 "$PY" -m contractive reproduce rifai2011 --device "$DEVICE" \
    --data-dir "$DATA" --out "$RUN" $EXTRA
# shellcheck disable=SC2086
step seeds 60 480 "$PY" -m contractive reproduce rifai2011 --device "$DEVICE" \
    --data-dir "$DATA" --out "$RUN" --finetune-seeds 3 $EXTRA
step pytest_all 15 300 env OMP_NUM_THREADS=1 "$PY" -m pytest -q -rfE --tb=line \
    -p no:cacheprovider -n 12 tests
tar -czf "$OUT/run.tgz" --exclude='*.safetensors' -C "$(dirname "$RUN")" "$(basename "$RUN")" \
    2>>"$OUT/summary.txt"
echo "== total $SECONDS s" | tee -a "$OUT/summary.txt"
