#!/usr/bin/env bash
# Round 8 of the study of G (README, "Round 8: enough optimiser steps"): round 7's shipped G
# (salient_erase_fixed_g_image) and none, both with train.min_steps=1000, on round 7's 448-px
# sets and round 6's splits. 20 epochs give 40 optimiser steps on a set of 64 training pairs and
# 640-1,280 on the larger ones; with min_steps every epoch passes over the data as often as it
# takes for 1,000 steps in all. fashion_products (2,058 training pairs: 1,280 steps in 20 epochs)
# is unchanged by construction, so its round-7 runs stand and it is not rerun here.
# Needs runs/features/SET448 and runs/study6-SET448/split.json (round 6); research/scripts/study448.sh runs it.
# Usage: bash research/scripts/round8_steps.sh [SET ...]   (default: the four sets; JOBS=2 by default)
# train.epochs=20: the photo configs' epochs until round 9 (they train 40 since).
set -euo pipefail
exec bash "$(dirname "$0")/study448.sh" 8 "--set train.min_steps=1000 --set train.epochs=20" ${*:-coco_mini fashion_tiny fashion_half fashion10}
