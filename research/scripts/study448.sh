#!/usr/bin/env bash
# One round of the study of G on round 7's 448-px photo sets (README, rounds 8 and 9): `none` and
# the shipped G (salient_erase_fixed_g_image), 3 seeds, 32 bits, round 6's splits and 448-px
# feature caches, with the round's own settings on top.
# Needs runs/features/SET448 and runs/study6-SET448/split.json (round 6).
# Usage: bash research/scripts/study448.sh ROUND "SETTINGS" SET ...   (writes runs/studyROUND-SET448;
#        JOBS=2 by default). The rounds call it: research/scripts/round8_steps.sh, round9_epochs.sh; round 9's
#        check of min_steps at 40 epochs: bash research/scripts/study448.sh 9steps "--set train.min_steps=1000" coco_mini fashion_tiny
set -euo pipefail
JOBS=${JOBS:-2}
ROUND=$1
read -r -a EXTRA <<< "$2"
shift 2
S=(--set model.image_size=448 --set data.options.image_size=448 "${EXTRA[@]}")
for V in "$@"; do
  case $V in
    fashion_products|coco_mini) C=$V; D=() ;;
    *) C=coco_mini; D=(--set "data.options.path=$PWD/runs/data/$V" --set "data.options.split_map={}") ;;
  esac
  adah study --config $C "${S[@]}" "${D[@]}" --set "data.options.features=runs/features/${V}448" \
      --split "runs/study6-${V}448/split.json" --variants none salient_erase_fixed_g_image \
      --seeds 3 --bits 32 --jobs "$JOBS" --out "runs/study${ROUND}-${V}448"
done
