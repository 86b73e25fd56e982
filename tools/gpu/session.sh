#!/usr/bin/env bash
# Every GPU measurement the project still lacks, in one command sized for a lent machine's
# 15 minutes of device time (docs/gpu-session.md): run from the checkout's root as
#
#   tools/gpu/session.sh OUT
#
# with .whl/ (decord, kornia, kornia_rs wheels) and .gpu/ (videos/, davis/ as that page says)
# carried. Steps run in order of value, each under its own time limit, and a failed or timed-out
# step does not stop the ones after it; each step's output goes to OUT/<step>.log and the last
# lines of all of them to stdout. About 6 minutes in all (STEPS picks a subset for a rerun,
# e.g. STEPS="fps batch").
#
#   fps       tracker frames/s, dino_vits8 bf16 and fp32 at 480p, dinov2_vits14 and
#             dinov3_vits16 at their preset's size (random weights: speed does not need them)
#   kernels   propagation product layouts and crop resizing on the GPU
#   batch     `segment --batch` of four dev clips on GPU 0
#   pretrain  ViT-S/8 DINO pretraining for PRETRAIN_SECONDS, both dev evaluations, shipping
#             (tools/gpu/pretrain_job.sh)
set -uo pipefail

if [ $# -ne 1 ]; then
    sed -n '2,19p' "$0" >&2
    exit 2
fi
out=$1
mkdir -p "$out"
STEPS=${STEPS:-fps kernels batch pretrain}
PRETRAIN_SECONDS=${PRETRAIN_SECONDS:-150}
export PYTHONUNBUFFERED=1
if compgen -G ".whl/*.whl" >/dev/null; then
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
        --target /tmp/site .whl/*.whl
    export PYTHONPATH=/tmp/site:${PYTHONPATH:-}
fi
export PYTHONPATH=$PWD:${PYTHONPATH:-}
export OUT_DIR=$out PRETRAIN_SECONDS VIDEO=.gpu/videos/bear.mp4

fps() {
    local name model size precision
    for name in vits8_bf16:dino_vits8:480:bf16 vits8_fp32:dino_vits8:480:fp32 \
        dinov2_vits14:dinov2_vits14:960:bf16 dinov3_vits16:dinov3_vits16:960:bf16; do
        IFS=: read -r name model size precision <<<"$name"
        python3 -m tools.bench.fps --device cuda --video "$VIDEO" --frames 120 --model "$model" \
            --short-side "$size" --precision "$precision" --json "$OUT_DIR/fps_$name.json" || return
    done
}

kernels() {
    python3 -m tools.bench.propagation --device cuda --skip-1080p --repeats 3 &&
        python3 -m tools.bench.crops --device cuda --batch-sizes 16,64 --repeats 3
}

batch() {  # tools.bench.batch reads the shared-data layout: videos/ and davis2016-dev/Annotations/480p
    local data=/tmp/gpu-batch-data
    mkdir -p "$data/davis2016-dev/Annotations"
    ln -sfn "$PWD/.gpu/videos" "$data/videos"
    ln -sfn "$PWD/.gpu/davis/Annotations/480p" "$data/davis2016-dev/Annotations/480p"
    python3 -m tools.bench.batch --device cuda --data "$data" --model dino_vits8 \
        --max-frames 1000 --clips dog-agility,soccerball,dance-jump,horsejump-low
}

pretrain() {
    TIME_LIMIT=$PRETRAIN_SECONDS EPOCHS=${EPOCHS:-40} \
        PRETRAIN_ARGS="--probe-davis .gpu/davis --probe-every 100" \
        tools/gpu/pretrain_job.sh .gpu/davis "$OUT_DIR/pretrain" .gpu/videos
}
export -f fps kernels batch pretrain

step() {  # step NAME SECONDS: run one step under its limit, log it, never abort the others
    local name=$1 limit=$2 start=$SECONDS status
    timeout "$limit" bash -c "$name" >"$OUT_DIR/$name.log" 2>&1
    status=$?
    echo "== $name: exit $status in $((SECONDS - start)) s (limit $limit s)"
    tail -n 12 "$OUT_DIR/$name.log"
}

for name in $STEPS; do
    case $name in
        fps) step fps 100 ;;
        kernels) step kernels 40 ;;
        batch) step batch 50 ;;
        pretrain) step pretrain $((PRETRAIN_SECONDS + 150)) ;;
        *) echo "unknown step $name (fps, kernels, batch, pretrain)" >&2 ;;
    esac
done
