#!/usr/bin/env bash
# MMBench-EN (test split via the MMBench server; its paper figures: lmms_eval_plugin/benchmarks.py).
# Prompt (LLaVA-1.5's model_vqa_mmbench.py): hint line, question line, one "A. text" line per option,
# "Answer with the option's letter from the given choices directly." Circular evaluation: the data holds
# every rotation of each question's options; a question counts only if all rotations are right.
# The dev tasks (MMBENCH_DEV_TASKS, default mmbench_en_dev) are scored by lmms-eval's MMBench evaluator,
# which asks a GPT judge (OPENAI_API_KEY, MODEL_VERSION) for answers that are not a bare option letter and
# guesses randomly when the judge fails; the paper-protocol column recomputes the circular figure from
# the samples without guessing. Without a key (or with JUDGE=none) the dev answers are logged unscored.
# The test tasks (MMBENCH_TEST_TASKS, default mmbench_en_test) write the submission spreadsheet
# $OUTPUT/submissions/mmbench_en_test_results.xlsx for the MMBench server. Each runs in its own lmms-eval
# call, so one task's failure loses no other's results. An empty variable skips that part.
# usage: eval/mmbench.sh CHECKPOINT [extra lmms-eval args]
source "$(dirname "$0")/_common.sh"
model=${1:?usage: $0 CHECKPOINT}
if [[ -n "${MMBENCH_DEV_TASKS-mmbench_en_dev}" ]]; then
    if [[ -z "${OPENAI_API_KEY:-}" && ${JUDGE:-gpt} == gpt ]]; then
        echo "MMBench dev: OPENAI_API_KEY not set, so no judge: treating it as JUDGE=none" >&2
        JUDGE=none
    fi
    judged_by_gpt "MMBench dev"
    run_lmms_eval "$model" "${MMBENCH_DEV_TASKS-mmbench_en_dev}" "${@:2}"
fi
JUDGE_ARGS=()
if [[ -n "${MMBENCH_TEST_TASKS-mmbench_en_test}" ]]; then
    run_lmms_eval "$model" "${MMBENCH_TEST_TASKS-mmbench_en_test}" "${@:2}"
fi
