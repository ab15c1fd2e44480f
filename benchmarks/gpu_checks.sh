#!/usr/bin/env bash
# The GPU checks of the speed issue in one call, sized for a lent H200 (one command of at
# most 10 minutes; the machine's start comes out of the same 15). On the device machine,
# whose python3 holds torch, torchvision and timm but not archlab's other needs:
#
#   here, once:  mkdir -p .gpu && cp -r /usr/share/datasets .gpu/ && echo /.gpu/ >> .git/info/exclude
#   device run:  command "bash benchmarks/gpu_checks.sh", carry [".gpu"], timeout_s 600
#
# Every stage writes into $OUT as it ends (what comes back from the device machine: at most
# 8 files, so all the output goes to one log.txt), and a stage cut off by its time limit
# loses only itself. The stages, in the order of what they are worth, with their limits in
# seconds (TOTAL, default 540, bounds the sum):
#
#   1. the machine: GPU name, driver, torch
#   2. ResNet-50's training throughput at 224 px, batch 256, bf16, channels_last, compiled,
#      archlab against torchvision's (v1.5, the one NVIDIA times) in the same settings:
#      NVIDIA publishes 2,470 img/s on an A100 with AMP (DeepLearningExamples); two
#      compilations of a training step (210)
#   3. the sweep at 224 px, batch 128, bf16 and channels_last, every family, archlab
#      against its peer's defaults and in the same settings; eager, because 76 compilations
#      would not fit (stage 2 gives compiled's figure for one family) (200)
#   4. the quick tour with --device cuda, timed as a newcomer runs it (110)
#   5. fashion-mnist-full with --device cuda, one seed, for what is left: 13 architectures
#      for 30 epochs are more than one call; its table holds the runs that finished
#
# Off a GPU (DEVICE=cpu SIZE=32 BATCH=8 R50_BATCH=8 ONLY=resnet50 TOTAL=330) it checks the
# plumbing in under 6 minutes.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-benchmarks/results/gpu}
DEVICE=${DEVICE:-cuda}
SIZE=${SIZE:-224}
BATCH=${BATCH:-128}
R50_BATCH=${R50_BATCH:-256}
TOTAL=${TOTAL:-540}
PY=${PYTHON:-python3}
mkdir -p "$OUT"
export PYTHONPATH=$PWD/src${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1
[ -d .gpu/datasets ] && export ARCHLAB_DATA=$PWD/.gpu/datasets
export ARCHLAB_OFFLINE=1
start=$SECONDS
left() { echo $(( TOTAL - (SECONDS - start) )); }
stage() {   # stage NAME LIMIT_S COMMAND...: run it under the smaller of its limit and what is left
    local name=$1 limit=$2; shift 2
    local t=$(( $(left) < limit ? $(left) : limit ))
    if (( t < 20 )); then echo "== $name: skipped, ${t} s left" | tee -a "$OUT/log.txt"; return; fi
    echo "== $name (at most $t s)" | tee -a "$OUT/log.txt"
    timeout "$t" "$@" 2>&1 | tee -a "$OUT/log.txt"
    echo "== $name: exit ${PIPESTATUS[0]} after $(( SECONDS - start )) s in all" \
        | tee -a "$OUT/log.txt"
}

{ nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv 2>/dev/null
  $PY -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda,
torch.cuda.get_device_name() if torch.cuda.is_available() else 'no GPU')"; } | tee "$OUT/log.txt"

stage resnet50 210 $PY -m archlab.cli bench resnet50 --vs torchvision --mode train --batch "$R50_BATCH" \
    --img-size "$SIZE" --precision bf16 --channels-last --compile --device "$DEVICE" \
    --rounds 5 --round-seconds 1 --out "$OUT/resnet50_train.csv"

stage sweep 200 $PY benchmarks/bench_sweep.py --device "$DEVICE" --img-size "$SIZE" \
    --batch "$BATCH" --precision bf16 --channels-last --rounds 3 --round-seconds 0.3 \
    ${ONLY:+--only "$ONLY"} --out "$OUT/sweep.csv"

stage quick_tour 110 $PY benchmarks/quick_tour.py --repeat 1 --out "$OUT/quick_tour.json" \
    -- --device "$DEVICE"

TOTAL=$(( TOTAL - 15 ))   # keeps time for the report of what finished
stage fashion_mnist_full "$(left)" $PY -m archlab.cli compare fashion-mnist-full \
    --device "$DEVICE" --seeds 1 --study /tmp/fashion-mnist-full --no-progress
TOTAL=$(( TOTAL + 15 ))
[ -d /tmp/fashion-mnist-full ] && $PY -m archlab.cli report /tmp/fashion-mnist-full \
    --no-html --csv "$OUT/fashion_mnist_full.csv" \
    | tee -a "$OUT/log.txt"
echo "done in $(( SECONDS - start )) s; results in $OUT" | tee -a "$OUT/log.txt"
