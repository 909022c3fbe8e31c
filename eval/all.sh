#!/usr/bin/env bash
# Every benchmark of the benchmark table in turn, then the comparison table (eval/collect_results.py -> $OUTPUT/table4.md).
# usage: eval/all.sh CHECKPOINT [--judge gpt|none] [extra lmms-eval args, e.g. --include_path DIR]
#   --judge gpt (default): LLaVA-in-the-Wild and MM-Vet are GPT-judged and run only when OPENAI_API_KEY
#     is set; --judge none: their answers are logged and not scored (the table says so).
# Tasks per benchmark: VQAV2_TASKS, VIZWIZ_TASKS, SQA_TASKS, POPE_TASKS, MMBENCH_DEV_TASKS,
# MMBENCH_TEST_TASKS, LLAVA_WILD_TASKS, MMVET_TASKS (defaults: the built-in lmms-eval tasks); a single
# TASKS would apply to every script, so it is ignored here.
set -euo pipefail
here=$(dirname "$0")
model=${1:?usage: $0 CHECKPOINT [--judge gpt|none] [extra lmms-eval args]}
shift
if [[ ${1:-} == --judge ]]; then
    export JUDGE=${2:?--judge needs gpt or none}
    shift 2
fi
case ${JUDGE:=gpt} in gpt | none) ;; *) echo "error: --judge must be gpt or none, got '$JUDGE'" >&2; exit 2 ;; esac
export JUDGE
unset TASKS
# the benchmark table (llava_vitsplit/lmms_eval_plugin/benchmarks.py) lists the scripts, judged ones last
lists=$("${PYTHON:-python}" -m llava_vitsplit.lmms_eval_plugin.benchmarks scripts)
unjudged=$(sed -n 1p <<<"$lists")
judged=$(sed -n 2p <<<"$lists")
for bench in $unjudged; do
    "$here/$bench.sh" "$model" "$@"
done
if [[ $JUDGE == none || -n "${OPENAI_API_KEY:-}" ]]; then
    for bench in $judged; do
        "$here/$bench.sh" "$model" "$@"
    done
else
    echo "OPENAI_API_KEY not set: skipping the judge-based benchmarks ($judged)" \
        "(--judge none logs their answers unscored)" >&2
fi
out=${OUTPUT:-eval_results/$(basename "$model")}
"${PYTHON:-python}" "$here/collect_results.py" "$out" --output "$out/table4.md"
