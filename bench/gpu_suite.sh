#!/usr/bin/env bash
# Every performance check on one GPU in under 8 minutes, one JSON + one markdown table:
# connector fwd+bwd in bf16, stage-1/stage-2 training steps at real width with reduced LLM depth
# (step time, tokens/s, MFU, peak memory), stage 2 on short and long samples padded vs packed (--packing), the dense ViT-Split-S vs full fine-tune ratio at batch 8,
# the deformable conv per implementation in fp32/bf16/fp16, and serving at 7B width (random weights, bf16,
# 256 new tokens forced): long answers transformers vs vLLM, and vLLM's OpenAI server vs the transformers
# engine under 1/4/16 concurrent clients (vLLM from .venv-vllm, or --vllm-python PATH).
#   bash bench/gpu_suite.sh [OUT_DIR]              (default OUT_DIR: bench_out/gpu_suite)
#   TINY=1 bash bench/gpu_suite.sh OUT_DIR         (or --tiny: tiny sizes on the CPU, a check of the suite)
# Extra arguments go to bench/gpu_suite.py (e.g. --only dense stage1, --budget 400).
set -euo pipefail
cd "$(dirname "$0")/.."
OUT_DIR=bench_out/gpu_suite
if [[ $# -gt 0 && $1 != --* ]]; then OUT_DIR=$1; shift; fi
ARGS=(--out "${OUT_DIR}")
if [[ ${TINY:-0} == 1 ]]; then ARGS+=(--tiny); fi
PYTHON=${PYTHON:-$( [[ -x .venv/bin/python ]] && echo .venv/bin/python || echo python )}
exec "${PYTHON}" bench/gpu_suite.py "${ARGS[@]}" "$@"
