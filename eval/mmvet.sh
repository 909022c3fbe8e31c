#!/usr/bin/env bash
# MM-Vet (GPT-judged score; its paper figures: lmms_eval_plugin/benchmarks.py).
# LLaVA-1.5 asked the bare question (lmms-eval's default adds a chain-of-thought preamble, which the
# llava_vitsplit model removes) and decoded greedily with no stop string. A GPT judge grades each answer:
# set OPENAI_API_KEY and MODEL_VERSION (the official MM-Vet evaluator uses gpt-4-0613; the default here).
# JUDGE=none logs the answers without scoring them (the samples file also serves the official online
# evaluator). A failed judge call fails the script instead of counting as a score.
# usage: eval/mmvet.sh CHECKPOINT [extra lmms-eval args]
source "$(dirname "$0")/_common.sh"
judged_by_gpt MM-Vet
export MODEL_VERSION=${MODEL_VERSION:-gpt-4-0613}
run_lmms_eval "${1:?usage: $0 CHECKPOINT}" "${TASKS:-${MMVET_TASKS:-mmvet}}" "${@:2}"
