#!/usr/bin/env bash
# The four-variant ablation: train baseline, lstm, attention and lstm_attention with the same
# (small) budget on the data of deploy/train-default.toml, then score them next to the classical
# baselines on the held-out set (synthetic seed 1000 of the three presets + real YW 2017-08-16).
#
#   bash bench/ablation.sh [OUT_DIR] [EXTRA_CHECKPOINT ...]
#
# Budget: EPOCHS x SAMPLES samples per variant (default 2 x 512 = 128 steps of batch 8), set
# by the environment variables of the same names. Extra checkpoints (e.g. the shipped model)
# are evaluated in the same run. The table is printed and written to OUT_DIR/evaluate/scores.md.
set -euo pipefail
out=${1:-out/ablation}
shift || true
epochs=${EPOCHS:-2}
samples=${SAMPLES:-512}
radinfill=${RADINFILL:-radinfill}
checkpoints=()
for variant in baseline lstm attention lstm_attention; do
    dir="$out/$variant"
    "$radinfill" train --config deploy/train-default.toml --variant "$variant" \
        --checkpoint-dir "$dir" --epochs "$epochs" --set "data.samples_per_epoch=$samples" \
        --set checkpoint_every=1000
    checkpoints+=(--checkpoint "$dir/$(cat "$dir/latest")")
done
for extra in "$@"; do
    checkpoints+=(--checkpoint "$extra")
done
"$radinfill" evaluate "${checkpoints[@]}" --out "$out/evaluate"
