#!/usr/bin/env bash
# Stage 2 with LoRA: LoRA on every linear layer of the LLM and the whole connector train; the tower and
# the LLM weights stay frozen. Writes the peft adapter, the processor and the build recipe;
# `llava-vitsplit merge-lora OUTPUT_DIR MERGED_DIR` makes a plain checkpoint.
#
# Defaults: the preset's training recipe (train.finetune_lora; llava-v1.5-7b: LLaVA-1.5's LoRA recipe, lr 2e-4,
# connector lr 2e-5, global batch 128, r 128, alpha 256, 1 epoch), ZeRO-3, bf16. Every path and size is an
# environment variable (scripts/common.sh lists them); extra arguments go to the trainer unchanged, e.g.
#   bash scripts/finetune_lora.sh --resume_from_checkpoint latest
#   NUM_GPUS=8 bash scripts/finetune_lora.sh  |  HOSTFILE=hostfile bash scripts/finetune_lora.sh
#   DEEPSPEED_CONFIG=./scripts/zero3_offload.json   (40G cards: optimizer + parameters offloaded to CPU)
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/common.sh

PRETRAIN_DIR=${PRETRAIN_DIR:-./checkpoints/llava-vitsplit-v1.5-7b-pretrain}
DATA_PATH=${DATA_PATH:-./playground/data/llava_v1_5_mix665k.json}
IMAGE_FOLDER=${IMAGE_FOLDER:-./playground/data}
OUTPUT_DIR=${OUTPUT_DIR:-./checkpoints/llava-vitsplit-v1.5-7b-lora}
DEEPSPEED_CONFIG=${DEEPSPEED_CONFIG-./scripts/zero3.json}   # DEEPSPEED_CONFIG= (empty): plain PyTorch, no DeepSpeed
SAVE_STEPS=${SAVE_STEPS:-50000}

run_stage --pretrain_mm_mlp_adapter "${PRETRAIN_DIR}" --lora_enable True -- "$@"
