#!/usr/bin/env bash
# Stage 2 with LoRA: LoRA adapters on every linear layer of the LLM (r=128, alpha=256) and the whole
# connector (lr 2e-5) train; the tower and the LLM weights stay frozen. Writes the peft adapter, the
# processor and the build recipe; `llava-vitsplit merge-lora OUTPUT_DIR MERGED_DIR` makes a plain checkpoint.
#
# Defaults: LLaVA-1.5 LoRA recipe (lr 2e-4, connector lr 2e-5, global batch 128, 1 epoch, ZeRO-3, bf16).
# Every path and size is an environment variable; extra arguments go to the
# trainer unchanged, e.g.  bash scripts/finetune_lora.sh --resume_from_checkpoint latest
#   NUM_GPUS=8 bash scripts/finetune_lora.sh  |  HOSTFILE=hostfile bash scripts/finetune_lora.sh
#   DEEPSPEED_CONFIG=./scripts/zero3_offload.json   (40G cards: optimizer + parameters offloaded to CPU)
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/common.sh

PRESET=${PRESET-llava-v1.5-7b}
MODEL_NAME_OR_PATH=${MODEL_NAME_OR_PATH:-lmsys/vicuna-7b-v1.5}
VISION_TOWER=${VISION_TOWER:-openai/clip-vit-large-patch14-336}
PRETRAIN_DIR=${PRETRAIN_DIR:-./checkpoints/llava-vitsplit-v1.5-7b-pretrain}
DATA_PATH=${DATA_PATH:-./playground/data/llava_v1_5_mix665k.json}
IMAGE_FOLDER=${IMAGE_FOLDER:-./playground/data}
OUTPUT_DIR=${OUTPUT_DIR:-./checkpoints/llava-vitsplit-v1.5-7b-lora}
DEEPSPEED_CONFIG=${DEEPSPEED_CONFIG-./scripts/zero3.json}   # DEEPSPEED_CONFIG= (empty): plain PyTorch, no DeepSpeed
GLOBAL_BATCH_SIZE=${GLOBAL_BATCH_SIZE:-128}
PER_DEVICE_BATCH_SIZE=${PER_DEVICE_BATCH_SIZE:-16}
LEARNING_RATE=${LEARNING_RATE:-2e-4}
MM_PROJECTOR_LR=${MM_PROJECTOR_LR:-2e-5}
LORA_R=${LORA_R:-128}
LORA_ALPHA=${LORA_ALPHA:-256}
TASK_HEAD_LR_MULTIPLIER=${TASK_HEAD_LR_MULTIPLIER:-1.0}
NUM_EPOCHS=${NUM_EPOCHS:-1}
MODEL_MAX_LENGTH=${MODEL_MAX_LENGTH:-2048}
BF16=${BF16:-True}
TF32=${TF32:-True}
GRADIENT_CHECKPOINTING=${GRADIENT_CHECKPOINTING:-True}
NUM_WORKERS=${NUM_WORKERS:-4}
SAVE_STEPS=${SAVE_STEPS:-50000}
SAVE_TOTAL_LIMIT=${SAVE_TOTAL_LIMIT:-1}
LOGGING_STEPS=${LOGGING_STEPS:-1}
REPORT_TO=${REPORT_TO:-none}
SEED=${SEED:-42}
GRAD_ACCUM=${GRAD_ACCUM:-$(grad_accum "${GLOBAL_BATCH_SIZE}" "${PER_DEVICE_BATCH_SIZE}" "${WORLD_SIZE_TOTAL}")}

launch_cmd
set -x
"${LAUNCH[@]}" llava_vitsplit.train \
  ${PRESET:+--preset "${PRESET}"} \
  ${DEEPSPEED_CONFIG:+--deepspeed "${DEEPSPEED_CONFIG}"} \
  --model_name_or_path "${MODEL_NAME_OR_PATH}" \
  --vision_tower "${VISION_TOWER}" \
  --pretrain_mm_mlp_adapter "${PRETRAIN_DIR}" \
  --lora_enable True \
  --lora_r "${LORA_R}" \
  --lora_alpha "${LORA_ALPHA}" \
  --mm_projector_lr "${MM_PROJECTOR_LR}" \
  --version vicuna_v1 \
  --data_path "${DATA_PATH}" \
  --image_folder "${IMAGE_FOLDER}" \
  --mm_vision_select_layer -2 \
  --image_aspect_ratio pad \
  --group_by_modality_length True \
  --task_head_lr_multiplier "${TASK_HEAD_LR_MULTIPLIER}" \
  --bf16 "${BF16}" \
  --tf32 "${TF32}" \
  --output_dir "${OUTPUT_DIR}" \
  --num_train_epochs "${NUM_EPOCHS}" \
  --per_device_train_batch_size "${PER_DEVICE_BATCH_SIZE}" \
  --gradient_accumulation_steps "${GRAD_ACCUM}" \
  --save_strategy steps \
  --save_steps "${SAVE_STEPS}" \
  --save_total_limit "${SAVE_TOTAL_LIMIT}" \
  --learning_rate "${LEARNING_RATE}" \
  --weight_decay 0. \
  --warmup_ratio 0.03 \
  --lr_scheduler_type cosine \
  --logging_steps "${LOGGING_STEPS}" \
  --model_max_length "${MODEL_MAX_LENGTH}" \
  --gradient_checkpointing "${GRADIENT_CHECKPOINTING}" \
  --dataloader_num_workers "${NUM_WORKERS}" \
  --report_to "${REPORT_TO}" \
  --seed "${SEED}" \
  ${DEVICE_ARGS[@]+"${DEVICE_ARGS[@]}"} \
  "$@"
