#!/usr/bin/env bash
# Round 6 of the study of G (README, "Round 6: attention over words"): on six photo sets, the
# photo default and `none` with the bag-of-words text branch, then the same split with MiniLM
# word pieces as the text positions and G's choices over the words. Needs the feature caches and
# data variants of round 4/5 (adah features extract ...; python research/scripts/fashion_variants.py).
# Usage: bash research/scripts/round6_words.sh [SET ...]   (default: all six; JOBS=2 by default)
set -euo pipefail
JOBS=${JOBS:-2}
SETS=${*:-fashion_products coco_mini fashion_tiny fashion_half fashion10 fashion_nolabel}
BOW="none erase_fixed_g_image"
WORDS="none erase_fixed_g_image attention_pool_text erase_fixed_g_text erase_random_text paper_text"
# The photo configs' settings in round 6 (448 px since round 7, 40 epochs since round 9).
R6=(--set model.image_size=224 --set data.options.image_size=224 --set train.epochs=20)
for V in $SETS; do
  case $V in
    fashion_products|coco_mini) C=$V; S=(--set "data.options.features=runs/features/$V") ;;
    *) C=coco_mini; S=(--set "data.options.path=$PWD/runs/data/$V" --set "data.options.features=runs/features/$V"
                       --set "data.options.split_map={}") ;;
  esac
  S+=("${R6[@]}")
  adah study --config $C "${S[@]}" --variants $BOW --seeds 3 --bits 32 --jobs "$JOBS" --out runs/study6-$V-bow
  adah study --config $C "${S[@]}" --set model.text_encoder=minilm --set "model.text_hidden=[256]" \
      --set "data.options.text_features=runs/textfeat/$V" --split runs/study6-$V-bow/split.json \
      --variants $WORDS --seeds 3 --bits 32 --jobs "$JOBS" --out runs/study6-$V-words
done
