#!/usr/bin/env bash
# ScienceQA-IMG (paper Table 4: LLaVA-1.5-7B 66.8, + ViT-Split 70.4; accuracy on the image subset of test).
# Scored locally (exact option letter); prompt ends "\nAnswer with the option's letter from the given
# choices directly."
# usage: eval/sqa.sh CHECKPOINT [extra lmms-eval args]
source "$(dirname "$0")/_common.sh"
run_lmms_eval "${1:?usage: $0 CHECKPOINT}" "${TASKS:-${SQA_TASKS:-scienceqa_img}}" "${@:2}"
