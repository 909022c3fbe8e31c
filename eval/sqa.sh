#!/usr/bin/env bash
# ScienceQA-IMG (accuracy on the image subset of test; its paper figures: lmms_eval_plugin/benchmarks.py).
# Scored locally (exact option letter); prompt ends "\nAnswer with the option's letter from the given
# choices directly."
# usage: eval/sqa.sh CHECKPOINT [extra lmms-eval args]
source "$(dirname "$0")/_common.sh"
run_lmms_eval "${1:?usage: $0 CHECKPOINT}" "${TASKS:-${SQA_TASKS:-scienceqa_img}}" "${@:2}"
