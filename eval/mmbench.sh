#!/usr/bin/env bash
# MMBench-EN (paper Table 4: LLaVA-1.5-7B 64.3, + ViT-Split 66.4).
# mmbench_en_dev is scored by lmms-eval's MMBench evaluator (circular evaluation); answers that are not
# a bare option letter are matched by an LLM judge, so set OPENAI_API_KEY (and optionally MODEL_VERSION,
# API_TYPE=azure + AZURE_API_KEY/AZURE_ENDPOINT). mmbench_en_test writes the submission spreadsheet
# $OUTPUT/submissions/mmbench_en_test_results.xlsx for the MMBench server.
# usage: eval/mmbench.sh CHECKPOINT [extra lmms-eval args]
source "$(dirname "$0")/_common.sh"
run_lmms_eval "${1:?usage: $0 CHECKPOINT}" "${TASKS:-mmbench_en_dev,mmbench_en_test}" "${@:2}"
