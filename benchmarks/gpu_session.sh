#!/usr/bin/env bash
# The project's GPU work in a few runs of the device tool (benchmarks/README.md, "A session with
# a GPU"). A device run gets a bare machine with 10 minutes per command and, now, 15 minutes of
# device time per task all told, so the work comes in steps that each fit one command:
#
#   here, once:  ../shared/tools/gpu-wheels.sh          # numpy 2.4 into .whl/ (2.5 breaks numba-cuda)
#                mkdir -p .data && cp -r ../shared/data/ptb .data/   # the corpus travels too
#   there:       bash benchmarks/gpu_session.sh STEP ...  (carry .whl and .data)
#
# STEP is one of
#   tests    pytest -m cuda: every kernel, scan and op against its NumPy reference on the GPU
#   kernels  benchmarks/gpu.py: the kernel and layer tables, also as gpu.json (chapter 10 reads
#            benchmarks/results/gpu.json: copy it there from the run's files)
#   speed    benchmarks/ptb.py --device gpu: PTB training tokens/s, small and medium presets
#   medium   the PTB medium preset with $MEDIUM_CELL (default lrn) on the GPU, for at most
#            $MEDIUM_SECONDS (default 480); then SIGINT, which saves a checkpoint. The next call
#            continues it (--resume) while the machine is still warm; results.json and curves.png
#            come back after every call.
# Everything printed is also written under $OUT (the device tool's folder; gpu-out/ elsewhere).
# Exit status: 0 all steps passed, 1 a step failed, 2 no usable GPU or an unknown step.
set -uo pipefail
cd "$(dirname "$0")/.." || exit 2
out=${OUT:-gpu-out}
mkdir -p "$out"
export PYTHONUNBUFFERED=1

steps=("$@")
[ ${#steps[@]} -eq 0 ] && steps=(tests kernels speed)
for step in "${steps[@]}"; do
    case $step in tests | kernels | speed | medium) ;; *)
        echo "gpu_session.sh: unknown step '$step'; use tests, kernels, speed or medium" >&2
        exit 2 ;;
    esac
done

if compgen -G ".whl/*.whl" >/dev/null; then
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
        --target /tmp/minirec-site .whl/*.whl || exit 2
    export PYTHONPATH=/tmp/minirec-site:$PWD
else
    export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}
fi

python3 -m minirec info 2>&1 | tee "$out/info.txt"
if ! python3 -c "import sys, minirec; sys.exit(0 if minirec.cuda_available() else 1)"; then
    echo "gpu_session.sh: no usable CUDA GPU here (needs CuPy and numba-cuda with numpy < 2.5;" \
        "see cuda_usable and numpy in $out/info.txt)" >&2
    exit 2
fi

status=0
for step in "${steps[@]}"; do
    echo "== $step"
    case $step in
    tests)
        python3 -m pytest -m cuda -q -p no:cacheprovider 2>&1 | tee "$out/cuda-tests.log" || status=1 ;;
    kernels)
        python3 benchmarks/gpu.py --json "$out/gpu.json" 2>&1 | tee "$out/gpu.txt" || status=1 ;;
    speed)
        for preset in small medium; do
            python3 benchmarks/ptb.py --device gpu --preset "$preset" 2>&1 | tee "$out/ptb-gpu-$preset.txt" \
                || status=1
        done ;;
    medium)
        cell=${MEDIUM_CELL:-lrn}
        run=runs/ptb-medium-$cell-gpu
        if [ -f "$run/checkpoint.npz" ]; then
            args=(--resume --out "$run" --device gpu --data-dir .data)
        else
            args=(--preset medium --cell "$cell" --device gpu --data-dir .data --out "$run")
        fi
        # SIGINT is minirec's Ctrl-C: it finishes the batch, saves a checkpoint and exits 130.
        timeout -s INT -k 120 "${MEDIUM_SECONDS:-480}" python3 -m minirec train ptb "${args[@]}" --no-progress \
            2>&1 | tee -a "$out/medium-$cell.log"
        code=${PIPESTATUS[0]}
        [ "$code" -ne 0 ] && [ "$code" -ne 124 ] && [ "$code" -ne 130 ] && status=1
        cp "$run/results.json" "$out/ptb-medium-$cell.json" 2>/dev/null
        cp "$run/curves.png" "$out/ptb-medium-$cell.png" 2>/dev/null ;;
    esac
done
exit $status
