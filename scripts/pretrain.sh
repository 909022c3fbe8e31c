#!/usr/bin/env bash
# Stage 1 (feature alignment): only the ViT-Split connector trains (task head included) on image-caption
# pairs with LLaVA's `plain` template; the vision tower and the LLM stay frozen. Writes
# $OUTPUT_DIR/connector.safetensors + connector_config.json for scripts/finetune.sh.
#
# Defaults: the preset's training recipe (train.pretrain; llava-v1.5-7b: LLaVA-1.5 + ViT-Split as released,
# lr 5e-4, global batch 256, 1 epoch), ZeRO-2, bf16. Every path and size is an environment variable
# (scripts/common.sh lists them); extra arguments go to the trainer unchanged, e.g.
#   DATA_PATH=data/pretrain.json IMAGE_FOLDER=data/images bash scripts/pretrain.sh --max_steps 100
#   NUM_GPUS=4 bash scripts/pretrain.sh                        (one node, 4 GPUs)
#   HOSTFILE=hostfile bash scripts/pretrain.sh                 (multi-node, DeepSpeed hostfile)
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/common.sh

DATA_PATH=${DATA_PATH:-./playground/data/LLaVA-Pretrain/blip_laion_cc_sbu_558k.json}
IMAGE_FOLDER=${IMAGE_FOLDER:-./playground/data/LLaVA-Pretrain/images}
OUTPUT_DIR=${OUTPUT_DIR:-./checkpoints/llava-vitsplit-v1.5-7b-pretrain}
DEEPSPEED_CONFIG=${DEEPSPEED_CONFIG-./scripts/zero2.json}   # DEEPSPEED_CONFIG= (empty): plain PyTorch, no DeepSpeed
SAVE_STEPS=${SAVE_STEPS:-24000}

run_stage --tune_mm_mlp_adapter True -- "$@"
