#!/usr/bin/env bash
# The GPU checks of issue 6 as one command, for a session that is lent a GPU machine (no network there,
# and the corpora folder beside the repository does not travel, so the corpora go along in .gpudata/, which git ignores).
#
#   here, once:  bash benchmarks/perf/gpu_check.sh --prepare DATA_FOLDER   (holding ptb/ and yahoo/)
#   there:       the device tool's run, carry [".gpudata"], timeout_s 480:
#                bash benchmarks/perf/gpu_check.sh
#   anywhere:    QUICK=1 DEVICE=cpu PRECISIONS=fp32 bash benchmarks/perf/gpu_check.sh   (the plumbing only)
#
# 1. the device tests: the training loop of every method and an IW-NLL batch under
#    torch.cuda.set_sync_debug_mode("error"), the GPU's values against the CPU's, bf16 autocast;
# 2. benchmarks/perf/perf.py --device cuda at the `ptb` preset (fp32 and bf16: training, IW-NLL K=500, MI/AU)
#    and at the `yahoo` preset (Yahoo's validation split standing in for its missing training split).
# Logs and JSON rows go to $OUT (the device tool's folder; ./gpu_check_out elsewhere). Exit 1 if a step failed.
set -uo pipefail
cd "$(dirname "$0")/../.."  # the repository root
DATA=.gpudata

if [ "${1:-}" = "--prepare" ]; then
    src=${2:?usage: gpu_check.sh --prepare DATA_FOLDER}
    [ -f "$src/ptb/train.txt" ] && [ -f "$src/yahoo/test.txt" ] || { echo "gpu_check.sh: no corpora under $src" >&2; exit 2; }
    rm -rf "$DATA" && mkdir -p "$DATA/ptb" "$DATA/yahoo"
    cp "$src"/ptb/{train,valid,test}.txt "$DATA/ptb/"
    cp "$src/yahoo/valid.txt" "$DATA/yahoo/train.txt"
    head -1000 "$src/yahoo/test.txt" > "$DATA/yahoo/valid.txt"
    cp "$src/yahoo/test.txt" "$DATA/yahoo/test.txt"
    du -sh "$DATA"
    exit 0
fi

[ -d "$DATA/ptb" ] || { echo "gpu_check.sh: run 'bash benchmarks/perf/gpu_check.sh --prepare' first (and carry .gpudata)" >&2; exit 2; }
OUT=${OUT:-gpu_check_out}
mkdir -p "$OUT"
DEVICE=${DEVICE:-cuda}
PRECISIONS=${PRECISIONS:-fp32,bf16}
PY=${PYTHON:-python3}
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1
if [ "${QUICK:-0}" = 1 ]; then
    PTB=(--steps 4 --warmup 1 --k 20 --eval-sentences 8 --probe-seconds 0.2 --slices 2 --slice-probe-seconds 0.05 --probe-sizes 256)
    YAHOO=(--steps 2 --warmup 1 --k 5 --eval-sentences 2 --probe-seconds 0.2 --slices 1 --slice-probe-seconds 0.05 --probe-sizes 256)
else
    PTB=(--steps 300 --warmup 20 --k 500 --eval-sentences 300 --probe-seconds 2 --slices 3 --slice-probe-seconds 0.3)
    YAHOO=(--steps 60 --warmup 5 --k 500 --eval-sentences 20 --probe-seconds 2 --slices 2 --slice-probe-seconds 0.3)
fi
failed=0
step() {  # step NAME COMMAND...: run it, log to $OUT/NAME.txt, remember a failure and go on
    local name=$1; shift
    echo "=== $name: $*"
    "$@" 2>&1 | tee "$OUT/$name.txt" || { echo "=== $name FAILED"; failed=1; }
}

step env bash -c "nvidia-smi --query-gpu=name,memory.total,clocks.max.sm,driver_version --format=csv 2>&1;
    $PY -c 'import torch; print(\"torch\", torch.__version__, \"cuda\", torch.version.cuda, \"cudnn\",
        torch.backends.cudnn.version(), \"gpu\", torch.cuda.is_available() and torch.cuda.get_device_name(0))'"
step tests "$PY" -m pytest -q -p no:cacheprovider -rs tests/test_device_paths.py tests/test_perf_script.py
step perf-ptb "$PY" benchmarks/perf/perf.py --device "$DEVICE" --preset ptb --data "$DATA/ptb" --threads 4 \
    --decoders standard,skip --precisions "$PRECISIONS" --cases matmul,train,iwnll,miau "${PTB[@]}" \
    --out "$OUT/perf-ptb.json"
step perf-yahoo "$PY" benchmarks/perf/perf.py --device "$DEVICE" --preset yahoo --data "$DATA/yahoo" --threads 4 \
    --decoders standard,skip --precisions "$PRECISIONS" --cases matmul,train,iwnll "${YAHOO[@]}" \
    --out "$OUT/perf-yahoo.json"
exit $failed
