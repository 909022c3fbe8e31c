#!/usr/bin/env bash
# LLaVA-Bench-in-the-Wild (relative score, judge-based; its paper figures: lmms_eval_plugin/benchmarks.py).
# A GPT judge rates each answer against the reference: needs OPENAI_API_KEY (or API_TYPE=azure with
# AZURE_API_KEY/AZURE_ENDPOINT). The judge model is MODEL_VERSION; this script defaults it to gpt-4o-mini,
# the judge of the paper's released code. LLaVA-1.5's figure used gpt-4-0314, so the two columns of the
# paper's row are not directly comparable, and neither is a run with another judge.
# lmms-eval records a failed judge call as scores [-1, -1] (all failed: it reports 100); here any failed
# call fails the script. JUDGE=none logs the answers without scoring them.
# usage: eval/llava_wild.sh CHECKPOINT [extra lmms-eval args]
source "$(dirname "$0")/_common.sh"
judged_by_gpt LLaVA-in-the-Wild
export MODEL_VERSION=${MODEL_VERSION:-gpt-4o-mini}
run_lmms_eval "${1:?usage: $0 CHECKPOINT}" "${TASKS:-${LLAVA_WILD_TASKS:-llava_in_the_wild}}" "${@:2}"
