#!/usr/bin/env bash
# Shared by the benchmark scripts in eval/: run lmms-eval with the llava_vitsplit model on TASKS.
#
# usage (from a benchmark script): run_lmms_eval CHECKPOINT TASKS [extra lmms-eval args...]
# environment:
#   NUM_GPUS      1 (default): one process; N > 1: `accelerate launch --num_processes N` (data parallel)
#   BATCH_SIZE    1 (default; LLaVA-1.5 evaluated one question at a time, batching can flip rare ties)
#   OUTPUT        results folder (default: eval_results/<checkpoint folder name>)
#   DTYPE         auto (bf16 on CUDA) | bf16 | fp16 | fp32
#   PROMPT_STYLE  llava15 (default: LLaVA-1.5 benchmark prompts) | task (lmms-eval's defaults)
#   LIMIT         evaluate only the first N documents of each task (smoke runs)
#   PYTHON        interpreter with llava-vitsplit[eval] installed (default: python)
#   JUDGE         gpt (default: GPT-judged tasks need OPENAI_API_KEY) | none (answers logged, not scored)
#   ENGINE        transformers (default: the llava_vitsplit model) | vllm (lmms-eval's vllm model on the
#                 checkpoint, one process; needs `make vllm` and PYTHON=.venv-vllm/bin/python; uses the
#                 tasks' own prompts, so PROMPT_STYLE does not apply; VLLM_MODEL_ARGS: more k=v pairs)
# lmms-eval can exit 0 after a failure, so success is judged by a new lmms-eval results file in OUTPUT
# (found by content); collect_results.py then prints lmms-eval's and the paper protocol's figures for this
# run and fails on a failed judge call.
set -euo pipefail
EVAL_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
JUDGE_ARGS=()

# judged_by_gpt NAME: GPT-judged tasks follow. JUDGE=none: lmms-eval's --predict_only (answers in the
# samples file, no judge call, no score); the placeholder key only lets lmms-eval import the task
# module (mmvet/utils.py builds its judge client at import) and is never sent anywhere.
judged_by_gpt() {
    case ${JUDGE:-gpt} in
    none)
        echo "$1: --judge none: answers are logged, not scored (no judge is called)" >&2
        JUDGE_ARGS=(--predict_only)
        export OPENAI_API_KEY=${OPENAI_API_KEY:-unused-with-judge-none}
        ;;
    gpt)
        JUDGE_ARGS=()
        : "${OPENAI_API_KEY:?$1 is judged by a GPT model: set OPENAI_API_KEY (or JUDGE=none to skip scoring)}"
        ;;
    *)
        echo "error: JUDGE must be gpt or none, got '${JUDGE}'" >&2
        exit 2
        ;;
    esac
}

# Sets model_args for lmms-eval's vllm model: the checkpoint and the dtype the transformers path uses.
vllm_model_args() {
    if ((${NUM_GPUS:-1} > 1)); then
        echo "error: ENGINE=vllm runs one process; NUM_GPUS=$NUM_GPUS is not supported with it" >&2
        exit 2
    fi
    local dtype
    dtype=$("${PYTHON:-python}" -c 'import sys; from llava_vitsplit.serve.vllm_engine import vllm_dtype; print(vllm_dtype(sys.argv[1]))' "${DTYPE:-auto}")
    model_args="model=$1,dtype=$dtype${VLLM_MODEL_ARGS:+,$VLLM_MODEL_ARGS}"
}

run_lmms_eval() {
    local model=$1 tasks=$2
    shift 2
    if [[ ! -f "$model/config.json" ]]; then
        echo "error: $model is not a checkpoint folder (no config.json)" >&2
        exit 2
    fi
    local out=${OUTPUT:-eval_results/$(basename "$model")}
    mkdir -p "$out"
    local stamp
    stamp=$(mktemp "$out/.started.XXXXXX")
    local launcher=("${PYTHON:-python}" -m lmms_eval)
    if ((${NUM_GPUS:-1} > 1)); then
        launcher=(accelerate launch --num_processes "$NUM_GPUS" -m lmms_eval)
    fi
    local limit=()
    if [[ -n "${LIMIT:-}" ]]; then limit=(--limit "$LIMIT"); fi
    local model_type=llava_vitsplit
    local model_args="pretrained=$model,dtype=${DTYPE:-auto},prompt_style=${PROMPT_STYLE:-llava15}"
    if [[ ${ENGINE:-transformers} == vllm ]]; then
        vllm_model_args "$model"
        model_type=vllm
    elif [[ ${ENGINE:-transformers} != transformers ]]; then
        echo "error: ENGINE must be transformers or vllm, got '$ENGINE'" >&2
        exit 2
    fi
    "${launcher[@]}" \
        --model "$model_type" \
        --model_args "$model_args" \
        --tasks "$tasks" \
        --batch_size "${BATCH_SIZE:-1}" \
        --output_path "$out" \
        --log_samples \
        "${JUDGE_ARGS[@]}" "${limit[@]}" "$@"
    local status=0
    "${PYTHON:-python}" "$EVAL_DIR/collect_results.py" "$out" --newer-than "$stamp" || status=$?
    rm -f "$stamp"
    if ((status == 2)); then
        echo "error: lmms-eval wrote no results for $tasks under $out (rerun with --verbosity DEBUG)" >&2
        exit 1
    fi
    return "$status"
}
