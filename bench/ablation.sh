#!/usr/bin/env bash
# The four-variant ablation: train baseline, lstm, attention and lstm_attention with the same
# budget on the data of deploy/train-default.toml, select each one's snapshot on the validation
# part of the real training events (as for the shipped network), then score them next to the
# classical causal methods on the held-out set (synthetic seed 1000 of the three presets, real
# YW 2017-08-16 and FMI 2017-05-09).
#
#   bash bench/ablation.sh [OUT_DIR] [EXTRA_CHECKPOINT ...]
#
# Budget: EPOCHS x SAMPLES samples per variant (default 20 x 400 = 1000 steps of batch 8), set
# by the environment variables of the same names. Extra checkpoints (e.g. the shipped network)
# are evaluated in the same run. The table is printed and written to OUT_DIR/evaluate/scores.md.
set -euo pipefail
out=${1:-out/ablation}
shift || true
epochs=${EPOCHS:-20}
samples=${SAMPLES:-400}
radinfill=${RADINFILL:-radinfill}
checkpoints=()
for variant in baseline lstm attention lstm_attention; do
    dir="$out/$variant"
    log="$out/$variant.log"
    mkdir -p "$out"
    "$radinfill" train --config deploy/train-default.toml --variant "$variant" \
        --checkpoint-dir "$dir" --epochs "$epochs" --set "data.samples_per_epoch=$samples" \
        2>&1 | tee "$log" | grep -v '^step '
    # The snapshot selected on validation among the safe ones, else the last one.
    best=$(sed -n 's/^best on validation: \(.*\) (hole RMSE.*/\1/p' "$log")
    checkpoints+=(--checkpoint "${best:-$dir/$(cat "$dir/latest")}")
done
for extra in "$@"; do
    checkpoints+=(--checkpoint "$extra")
done
methods=()
for method in persistence laplace advection advection_smooth advection_boundary; do
    methods+=(--method "$method")
done
"$radinfill" evaluate "${methods[@]}" "${checkpoints[@]}" --out "$out/evaluate"
