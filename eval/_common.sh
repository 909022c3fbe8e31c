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
#   ENGINE        transformers (default: the llava_vitsplit model) | vllm (lmms-eval's vllm model on the
#                 checkpoint, one process; needs `make vllm` and PYTHON=.venv-vllm/bin/python; uses the
#                 tasks' own prompts, so PROMPT_STYLE does not apply; VLLM_MODEL_ARGS: more k=v pairs)
# lmms-eval can exit 0 after a failure, so success is judged by a new *_results.json in OUTPUT.
set -euo pipefail

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
        "${limit[@]}" "$@"
    local results submissions=""
    results=$(find "$out" -name '*_results.json' -newer "$stamp" | sort | tail -n 1)
    if [[ -d "$out/submissions" ]]; then
        submissions=$(find "$out/submissions" -type f -newer "$stamp" | sort)
    fi
    rm -f "$stamp"
    if [[ -z "$results" ]]; then
        echo "error: lmms-eval wrote no results for $tasks under $out (rerun with --verbosity DEBUG)" >&2
        exit 1
    fi
    echo "results: $results"
    if [[ -n "$submissions" ]]; then
        echo "test-server submission files (upload these):"
        echo "$submissions" | sed 's/^/  /'
    fi
}
