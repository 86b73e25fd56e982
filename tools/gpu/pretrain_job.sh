#!/usr/bin/env bash
# Pretrain a backbone on a GPU within a wall-time budget, then measure it against random weights
# on a DAVIS split and ship it: one command, for machines lent for a few minutes at a time, on
# which dinotrack is a source checkout (not installed).
#
#   tools/gpu/pretrain_job.sh DAVIS_ROOT OUT DATA [DATA ...]
#
# DAVIS_ROOT: a DAVIS layout with Annotations/ and ImageSets/; missing JPEG frames are rebuilt
#   from DATA's <sequence>.mp4 (tools/data/davis_from_videos.py).
# OUT: where the results go: the run's log and config, both evaluations' scores, the shipped
#   fp16 weights and card, and the weights split into parts under 16 MiB (join: cat NAME.pth.part-*).
# DATA: folders or files of unlabelled videos/images for `pretrain --data`.
#
# Settings (environment): ARCH (vit_small), PATCH (8), BATCH (48 per GPU), EPOCHS (60),
# TIME_LIMIT (seconds of training in this command, default 360), SPLIT (dev), NAME
# (dinotrack_vits8_davis16), RUN (runs/$NAME: keep it between commands to resume), WORKERS
# (DataLoader workers: the CPU cores less 2, at least 1; with one keyframe per DAVIS clip a random
# frame costs ~0.1-0.17 s of decoding, so a GPU needs many of them), PRETRAIN_ARGS
# (more `pretrain` flags), EVAL_ARGS (more `eval davis` flags), PY (python3), ONLY_TRAIN (1: stop
# after training, for the commands before the last one).
# Wheels in .whl/ (e.g. decord, kornia, kornia_rs) are installed into /tmp/site first.
set -euo pipefail

if [ $# -lt 3 ]; then
    sed -n '2,21p' "$0" >&2
    exit 2
fi
davis=$1
out=$2
shift 2
ARCH=${ARCH:-vit_small}
PATCH=${PATCH:-8}
BATCH=${BATCH:-48}
EPOCHS=${EPOCHS:-60}
TIME_LIMIT=${TIME_LIMIT:-360}
SPLIT=${SPLIT:-dev}
NAME=${NAME:-dinotrack_vits8_davis16}
RUN=${RUN:-runs/$NAME}
PY=${PY:-python3}
cores=$(nproc)
WORKERS=${WORKERS:-$((cores > 3 ? cores - 2 : 1))}
export PYTHONUNBUFFERED=1

if compgen -G ".whl/*.whl" >/dev/null; then
    "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
        --target /tmp/site .whl/*.whl
    export PYTHONPATH=/tmp/site:${PYTHONPATH:-}
fi
export PYTHONPATH=$PWD:${PYTHONPATH:-}
mkdir -p "$out"

data_flags=()
for d in "$@"; do data_flags+=(--data "$d"); done
for d in "$@"; do
    if [ -d "$d" ]; then "$PY" -m tools.data.davis_from_videos --videos "$d" --root "$davis"; break; fi
done

# Train until the schedule ends or the time limit; a later command with the same RUN resumes.
# shellcheck disable=SC2086
"$PY" -m pretrain "${data_flags[@]}" --arch "$ARCH" --patch-size "$PATCH" --out "$RUN" \
    --batch-size "$BATCH" --epochs "$EPOCHS" --time-limit "$TIME_LIMIT" --no-progress \
    --num-workers "$WORKERS" --log-every 5 ${PRETRAIN_ARGS:-}
cp "$RUN/log.jsonl" "$RUN/config.json" "$out/"
if [ "${ONLY_TRAIN:-0}" = 1 ]; then
    echo "trained: $RUN (run again to continue)"
    exit 0
fi

# The same architecture with its initial (random) weights, for comparison.
# shellcheck disable=SC2086
"$PY" -m pretrain "${data_flags[@]}" --arch "$ARCH" --patch-size "$PATCH" --out "$RUN-init" \
    --batch-size "$BATCH" --epochs "$EPOCHS" --max-steps 0 --no-progress ${PRETRAIN_ARGS:-}

for which in trained init; do
    weights=$RUN/backbone.pth
    [ "$which" = init ] && weights=$RUN-init/backbone.pth
    # shellcheck disable=SC2086
    "$PY" -m eval davis --root "$davis" --split "$SPLIT" --weights "$weights" \
        --out "$RUN-eval-$which" --overwrite ${EVAL_ARGS:-}
    cp "$RUN-eval-$which/scores-$SPLIT.json" "$out/scores-$SPLIT-$which.json"
done

"$PY" -m tools.runs.ship_weights "$RUN" --name "$NAME" --out "$out" \
    --scores "$out/scores-$SPLIT-trained.json" --baseline "$out/scores-$SPLIT-init.json"
(
    cd "$out"
    sha256sum "$NAME.pth" >"$NAME.pth.sha256"
    split -b 15M "$NAME.pth" "$NAME.pth.part-"
    sha256sum "$NAME".pth.part-* >"$NAME.parts.sha256"
    rm "$NAME.pth"
)
echo "done: $out"
