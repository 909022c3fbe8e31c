#!/usr/bin/env bash
# Stage 2 (visual instruction tuning): the connector (loaded from stage 1) and the whole LLM train; the
# vision tower stays frozen. The LLM family's template (`vicuna_v1` for Vicuna), `pad` aspect ratio,
# modality-grouped batches.
# Writes a full checkpoint (model + processor) loadable by AutoModelForImageTextToText.from_pretrained.
#
# Defaults: the preset's training recipe (train.finetune; llava-v1.5-7b: LLaVA-1.5 + ViT-Split as released,
# lr 2e-5, global batch 256 -- LLaVA-1.5 itself used 128, 1 epoch), ZeRO-3, bf16. Every path and size is an
# environment variable (scripts/common.sh lists them); extra arguments go to the trainer unchanged, e.g.
#   bash scripts/finetune.sh --resume_from_checkpoint latest
#   NUM_GPUS=8 bash scripts/finetune.sh  |  HOSTFILE=hostfile bash scripts/finetune.sh  (multi-node)
#   DEEPSPEED_CONFIG=./scripts/zero3_offload.json   (40G cards: optimizer + parameters offloaded to CPU)
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/common.sh

PRETRAIN_DIR=${PRETRAIN_DIR:-./checkpoints/llava-vitsplit-v1.5-7b-pretrain}
DATA_PATH=${DATA_PATH:-./playground/data/llava_v1_5_mix665k.json}
IMAGE_FOLDER=${IMAGE_FOLDER:-./playground/data}
OUTPUT_DIR=${OUTPUT_DIR:-./checkpoints/llava-vitsplit-v1.5-7b}
DEEPSPEED_CONFIG=${DEEPSPEED_CONFIG-./scripts/zero3.json}   # DEEPSPEED_CONFIG= (empty): plain PyTorch, no DeepSpeed
SAVE_STEPS=${SAVE_STEPS:-50000}

run_stage --pretrain_mm_mlp_adapter "${PRETRAIN_DIR}" -- "$@"
