#!/usr/bin/env bash
# MM-Vet (paper Table 4: LLaVA-1.5-7B 31.1, + ViT-Split 31.2; GPT-judged score).
# LLaVA-1.5 asked the bare question (lmms-eval's default adds a chain-of-thought preamble, which the
# llava_vitsplit model removes) and decoded greedily. A GPT judge grades each answer: set OPENAI_API_KEY
# and MODEL_VERSION (the official MM-Vet evaluator uses gpt-4-0613; default here gpt-4-0613 too).
# The answers are also in the samples file (--log_samples) for the official online evaluator.
# usage: eval/mmvet.sh CHECKPOINT [extra lmms-eval args]
source "$(dirname "$0")/_common.sh"
: "${OPENAI_API_KEY:?MM-Vet is judged by a GPT model: set OPENAI_API_KEY}"
export MODEL_VERSION=${MODEL_VERSION:-gpt-4-0613}
run_lmms_eval "${1:?usage: $0 CHECKPOINT}" "${TASKS:-mmvet}" "${@:2}"
