#!/usr/bin/env bash
# VQAv2 (test-dev accuracy; its paper figures: lmms_eval_plugin/benchmarks.py).
# Answers the test split and writes a test-server submission file to
# $OUTPUT/submissions/vqav2-test-submission-*.json; upload it to the EvalAI VQA challenge
# (phase test-dev) to get the paper's number. `TASKS=vqav2_val` scores the val split locally instead.
# usage: eval/vqav2.sh CHECKPOINT [extra lmms-eval args]
source "$(dirname "$0")/_common.sh"
run_lmms_eval "${1:?usage: $0 CHECKPOINT}" "${TASKS:-${VQAV2_TASKS:-vqav2_test}}" "${@:2}"
