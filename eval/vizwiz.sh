#!/usr/bin/env bash
# VizWiz-VQA (test-dev accuracy; its paper figures: lmms_eval_plugin/benchmarks.py).
# Prompt (LLaVA-1.5): "...\nWhen the provided information is insufficient, respond with 'Unanswerable'.
# \nAnswer the question using a single word or phrase." Writes the test-server submission file
# $OUTPUT/submissions/vizwiz_vqa-test-submission-*.json; upload it to the EvalAI VizWiz challenge.
# `TASKS=vizwiz_vqa_val` scores the val split locally instead.
# usage: eval/vizwiz.sh CHECKPOINT [extra lmms-eval args]
source "$(dirname "$0")/_common.sh"
run_lmms_eval "${1:?usage: $0 CHECKPOINT}" "${TASKS:-${VIZWIZ_TASKS:-vizwiz_vqa_test}}" "${@:2}"
