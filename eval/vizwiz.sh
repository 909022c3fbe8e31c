#!/usr/bin/env bash
# VizWiz-VQA (paper Table 4: LLaVA-1.5-7B 50.0, + ViT-Split 51.7; test-dev accuracy).
# Prompt (LLaVA-1.5): "...\nWhen the provided information is insufficient, respond with 'Unanswerable'.
# \nAnswer the question using a single word or phrase." Writes the test-server submission file
# $OUTPUT/submissions/vizwiz_vqa-test-submission-*.json; upload it to the EvalAI VizWiz challenge.
# `TASKS=vizwiz_vqa_val` scores the val split locally instead.
# usage: eval/vizwiz.sh CHECKPOINT [extra lmms-eval args]
source "$(dirname "$0")/_common.sh"
run_lmms_eval "${1:?usage: $0 CHECKPOINT}" "${TASKS:-${VIZWIZ_TASKS:-vizwiz_vqa_test}}" "${@:2}"
