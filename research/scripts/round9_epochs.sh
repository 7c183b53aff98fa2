#!/usr/bin/env bash
# Round 9 of the study of G (README, "Round 9: 40 epochs"). In rounds 7 and 8 the best validation epoch of fashion_products and
# fashion_half is 16-20 of 20 in every run, with or without train.min_steps, so those sets are
# still improving when training stops, and the photo configs' learning-rate step
# (train.lr_step_epochs = 20) is never reached. Here the shipped G (salient_erase_fixed_g_image)
# and none train 40 epochs on round 7's five 448-px sets (round 6's splits, 3 seeds, 32 bits): 20 at
# the configured rate and 20 at a tenth of it, the schedule of deviation 1.
# Needs runs/features/SET448 and runs/study6-SET448/split.json (round 6); research/scripts/study448.sh runs it.
# Usage: bash research/scripts/round9_epochs.sh [SET ...]   (default: the five sets; JOBS=2 by default)
set -euo pipefail
exec bash "$(dirname "$0")/study448.sh" 9 "--set train.epochs=40" ${*:-fashion_products coco_mini fashion_tiny fashion_half fashion10}
