#!/usr/bin/env bash
# The dev-split golden outputs of the code in CODE_DIR: `eval davis` on the whole DAVIS-2016 dev
# split and `segment` on every dev sequence, test_vit_tiny at short side 240 on the CPU.
# Run it on two trees and compare the outputs byte for byte (cmp -r OUT_A OUT_B, scores
# included):  tools/bench/golden.sh CODE_DIR OUT_DIR [DATA_DIR]
set -eu
code=$(cd "$1" && pwd); out=$2
data=${3:-$code/../shared/data}/davis2016-dev
rm -rf "$out"; mkdir -p "$out"; out=$(cd "$out" && pwd)
cd "$code"
python -m dinotrack eval davis --root "$data" --split dev --year 2016 --model test_vit_tiny \
  --short-side 240 --device cpu --out "$out/eval" > "$out/eval.log" 2>&1
while read -r s; do
  python -m dinotrack segment "$data/JPEGImages/480p/$s" \
    --mask "$data/Annotations/480p/$s/00000.png" --out "$out/segment/$s" \
    --model test_vit_tiny --device cpu --short-side 240 >> "$out/segment.log" 2>&1
done < "$data/ImageSets/2016/dev.txt"
