#!/usr/bin/env bash
# Round 8 of the study of G (README, "Round 8: enough optimiser steps"): round 7's shipped G
# (salient_erase_fixed_g_image) and none, both with train.min_steps=1000, on round 7's 448-px
# sets and round 6's splits. 20 epochs give 40 optimiser steps on a set of 64 training pairs and
# 640-1,280 on the larger ones; with min_steps every epoch passes over the data as often as it
# takes for 1,000 steps in all. fashion_products (2,058 training pairs: 1,280 steps in 20 epochs)
# is unchanged by construction, so its round-7 runs stand and it is not rerun here.
# Needs runs/features/SET448 and runs/study6-SET448/split.json (round 6).
# Usage: bash benchmarks/round8_steps.sh [SET ...]   (default: the four sets; JOBS=2 by default)
set -euo pipefail
JOBS=${JOBS:-2}
SETS=${*:-coco_mini fashion_tiny fashion_half fashion10}
S=(--set model.image_size=448 --set data.options.image_size=448 --set train.min_steps=1000)
for V in $SETS; do
  case $V in
    fashion_products|coco_mini) C=$V; D=() ;;
    *) C=coco_mini; D=(--set "data.options.path=$PWD/runs/data/$V" --set "data.options.split_map={}") ;;
  esac
  adah study --config $C "${S[@]}" "${D[@]}" --set "data.options.features=runs/features/${V}448" \
      --split "runs/study6-${V}448/split.json" --variants none salient_erase_fixed_g_image \
      --seeds 3 --bits 32 --jobs "$JOBS" --out "runs/study8-${V}448"
done
