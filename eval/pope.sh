#!/usr/bin/env bash
# POPE random / popular / adversarial (paper Table 4: LLaVA-1.5-7B 87.3 / 86.2 / 84.2,
# + ViT-Split 88.5 / 87.4 / 86.1; F1 score). Scored locally; prompt suffix "\nAnswer the question using
# a single word or phrase."
# usage: eval/pope.sh CHECKPOINT [extra lmms-eval args]
source "$(dirname "$0")/_common.sh"
run_lmms_eval "${1:?usage: $0 CHECKPOINT}" "${TASKS:-${POPE_TASKS:-pope_random,pope_pop,pope_adv}}" "${@:2}"
