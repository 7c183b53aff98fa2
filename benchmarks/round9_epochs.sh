#!/usr/bin/env bash
# Round 9 of the study of G (README, "Round 9: 40 epochs"). In rounds 7 and 8 the best validation epoch of fashion_products and
# fashion_half is 16-20 of 20 in every run, with or without train.min_steps, so those sets are
# still improving when training stops, and the photo configs' learning-rate step
# (train.lr_step_epochs = 20) is never reached. Here the shipped G (salient_erase_fixed_g_image)
# and none train 40 epochs on round 7's five 448-px sets (round 6's splits, 3 seeds, 32 bits): 20 at
# the configured rate and 20 at a tenth of it, the schedule of deviation 1.
# Needs runs/features/SET448 and runs/study6-SET448/split.json (round 6).
# Usage: bash benchmarks/round9_epochs.sh [SET ...]   (default: the five sets; JOBS=2 by default)
set -euo pipefail
JOBS=${JOBS:-2}
SETS=${*:-fashion_products coco_mini fashion_tiny fashion_half fashion10}
S=(--set model.image_size=448 --set data.options.image_size=448 --set train.epochs=40)
for V in $SETS; do
  case $V in
    fashion_products|coco_mini) C=$V; D=() ;;
    *) C=coco_mini; D=(--set "data.options.path=$PWD/runs/data/$V" --set "data.options.split_map={}") ;;
  esac
  adah study --config $C "${S[@]}" "${D[@]}" --set "data.options.features=runs/features/${V}448" \
      --split "runs/study6-${V}448/split.json" --variants none salient_erase_fixed_g_image \
      --seeds 3 --bits 32 --jobs "$JOBS" --out "runs/study9-${V}448"
done
