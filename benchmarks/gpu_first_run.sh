#!/usr/bin/env bash
# The first run on a GPU machine: everything measured in one go, in under 8 minutes, so that the
# first minutes on a GPU are spent measuring, not debugging (benchmarks/README.md, "The first run").
#
#   here, once:  ../shared/tools/gpu-wheels.sh        # numpy 2.4 into .whl/ (2.5 breaks numba-cuda)
#   there:       bash benchmarks/gpu_first_run.sh    (no network needed; carry .whl)
#
# Steps, each with its own timeout inside the total ($TOTAL_SECONDS, default 470):
#   preflight  minirec info + the preflight (numpy, CuPy, driver, numba-cuda, NVVM, NVRTC, one tiny
#              kernel launched); stops the run at once, exit 2, if it fails, saying what is missing
#   micro      benchmarks/gpu_micro.py: CPU µs and GPU µs per launch (no-op RawKernel, numba no-op,
#              scan, SRU forward/backward, a CuPy copy for the bandwidth)
#   tests      pytest -m cuda: every kernel against its NumPy reference on the GPU
#   bench      benchmarks/gpu.py at one shape, a few cells and kernels, cuDNN anchors; each row is
#              printed (and kept in the log) as soon as it is measured
# then a compact table: each step's status and seconds, and the measured tables.
# Everything printed is also written under $OUT (the device tool's folder; gpu-out/ elsewhere).
# Exit status: 0 all steps passed, 1 a step failed or timed out, 2 no usable GPU.
set -uo pipefail
cd "$(dirname "$0")/.." || exit 2
out=${OUT:-gpu-out}
mkdir -p "$out"
export PYTHONUNBUFFERED=1
total=${TOTAL_SECONDS:-470}
began=$SECONDS
summary=()
status=0

if compgen -G ".whl/*.whl" >/dev/null; then
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
        --target /tmp/minirec-site .whl/*.whl || exit 2
    export PYTHONPATH=/tmp/minirec-site:$PWD
else
    export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}
fi

# step NAME SECONDS COMMAND...: run it under its timeout (cut to the time left), log to $out/NAME.log
step() {
    local name=$1 limit=$2
    shift 2
    local left=$((total - (SECONDS - began)))
    ((limit > left)) && limit=$left
    if ((limit < 5)); then
        summary+=("$(printf '%-10s %-22s %5s' "$name" "skipped: no time left" -)")
        status=1
        return 1
    fi
    echo "== $name (at most ${limit} s)"
    local t0=$SECONDS
    timeout -k 10 "$limit" "$@" 2>&1 | tee "$out/$name.log"
    local code=${PIPESTATUS[0]} how
    case $code in
    0) how="ok" ;;
    124 | 137) how="timed out after ${limit} s"; status=1 ;;
    *) how="failed (exit $code)"; status=1 ;;
    esac
    summary+=("$(printf '%-10s %-22s %5d' "$name" "$how" $((SECONDS - t0)))")
    return "$code"
}

if ! step preflight 90 python3 -c '
import sys
from minirec import info
from minirec.kernels import preflight

info.run(type("Args", (), {"json": False})())
sys.exit(0 if preflight.cuda_ready() else 1)'; then
    echo "gpu_first_run.sh: the GPU is not usable here; the FAIL line of cuda_checks above says what is missing" >&2
    exit 2
fi

step micro 60 python3 benchmarks/gpu_micro.py
step tests 200 python3 -m pytest -m cuda -q -p no:cacheprovider -x --durations=5
step bench 150 python3 benchmarks/gpu.py --shapes 512x32x512 --cells sru,lrn,mingru,lstm,gru,gru:reset_after \
    --kernels sru,mingru:parallel,scan:blelloch --anchors torch-lstm,torch-gru --budget 0.2 --max-iters 50 \
    --json "$out/gpu.json"

{
    echo
    echo "== summary ($((SECONDS - began)) s of ${total} s)"
    printf '%-10s %-22s %5s\n' step status s
    printf '%s\n' "${summary[@]}"
    echo
    sed -n '/^Single launches/,$p' "$out/micro.log" 2>/dev/null
    echo
    tail -n 3 "$out/tests.log" 2>/dev/null
    echo
    sed -n '/^Layers:/,$p' "$out/bench.log" 2>/dev/null
} | tee "$out/summary.txt"
exit "$status"
