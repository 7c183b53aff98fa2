#!/usr/bin/env bash
# Round 7 of the study of G (README, "Round 7: erasing inside the object"): at 448 px (14x14
# maps), D hashes SCDA's salient cells and the adversarial terms erase half of them, with G fixed
# at its random initialisation or trained, next to none and SCDA's pooling alone, on round 6's
# splits. Needs round 6's 448-px feature caches (runs/features/SET448) and splits
# (runs/study6-SET448/split.json). A run of round 6 (none, saliency_image_w0) is copied, not
# retrained: the same config, split and seed give the same run (delete runs/study7-* to retrain).
# Usage: bash research/scripts/round7_salient.sh [SET ...]   (default: all five; JOBS=2 by default)
# fashion_nolabel, a check outside the rule's five sets, needs its 448-px cache first:
#   adah features extract --config coco_mini --set data.options.path=$PWD/runs/data/fashion_nolabel \
#       --set data.options.features=runs/features/fashion_nolabel448 --set "data.options.split_map={}"
# VARIANTS overrides the new variants (e.g. VARIANTS=salient_erase_nothing_image, the control).
set -euo pipefail
JOBS=${JOBS:-2}
SETS=${*:-coco_mini fashion_tiny fashion_half fashion10 fashion_products}
NEW=${VARIANTS:-salient_erase_fixed_g_image salient_erase_image}
S=(--set model.image_size=448 --set data.options.image_size=448 --set train.epochs=20)  # 20: the photo configs' epochs until round 9
for V in $SETS; do
  case $V in
    fashion_products|coco_mini) C=$V; D=() ;;
    *) C=coco_mini; D=(--set "data.options.path=$PWD/runs/data/$V" --set "data.options.split_map={}") ;;
  esac
  OUT=runs/study7-${V}448
  SPLIT=runs/study6-${V}448/split.json   # round 6's 448-px split; for a set round 6 ran at 224 px only
  [ -f "$SPLIT" ] || SPLIT=runs/study6-$V-bow/split.json   # (fashion_nolabel), its 224-px split
  mkdir -p "$OUT"
  for OLD in none saliency_image_w0; do
    if [ -d "runs/study6-${V}448/$OLD" ] && [ ! -d "$OUT/$OLD" ]; then cp -r "runs/study6-${V}448/$OLD" "$OUT/"; fi
  done
  adah study --config $C "${S[@]}" "${D[@]}" --set "data.options.features=runs/features/${V}448" \
      --split "$SPLIT" --variants none saliency_image_w0 $NEW \
      --seeds 3 --bits 32 --jobs "$JOBS" --out "$OUT"
done
