#!/usr/bin/env bash
# POPE random / popular / adversarial (F1 score; its paper figures: lmms_eval_plugin/benchmarks.py).
# Scored locally; prompt suffix "\nAnswer the question using a single word or phrase."
# usage: eval/pope.sh CHECKPOINT [extra lmms-eval args]
source "$(dirname "$0")/_common.sh"
run_lmms_eval "${1:?usage: $0 CHECKPOINT}" "${TASKS:-${POPE_TASKS:-pope_random,pope_pop,pope_adv}}" "${@:2}"
