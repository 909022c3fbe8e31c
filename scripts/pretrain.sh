#!/usr/bin/env bash
# Stage 1 (feature alignment): only the ViT-Split connector trains (task head included) on image-caption
# pairs with LLaVA's `plain` template; the vision tower and the LLM stay frozen. Writes
# $OUTPUT_DIR/connector.safetensors + connector_config.json for scripts/finetune.sh.
#
# Defaults: LLaVA-1.5-7B + ViT-Split as released (lr 5e-4, global batch 256, 1 epoch, ZeRO-2, bf16).
# Every path and size is an environment variable; extra arguments go to the trainer unchanged, e.g.
#   DATA_PATH=data/pretrain.json IMAGE_FOLDER=data/images bash scripts/pretrain.sh --max_steps 100
#   NUM_GPUS=4 bash scripts/pretrain.sh                        (one node, 4 GPUs)
#   HOSTFILE=hostfile bash scripts/pretrain.sh                 (multi-node, DeepSpeed hostfile)
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/common.sh

PRESET=${PRESET-llava-v1.5-7b}            # connector settings; PRESET= (empty) to give them as arguments
MODEL_NAME_OR_PATH=${MODEL_NAME_OR_PATH:-lmsys/vicuna-7b-v1.5}
VISION_TOWER=${VISION_TOWER:-openai/clip-vit-large-patch14-336}
DATA_PATH=${DATA_PATH:-./playground/data/LLaVA-Pretrain/blip_laion_cc_sbu_558k.json}
IMAGE_FOLDER=${IMAGE_FOLDER:-./playground/data/LLaVA-Pretrain/images}
OUTPUT_DIR=${OUTPUT_DIR:-./checkpoints/llava-vitsplit-v1.5-7b-pretrain}
DEEPSPEED_CONFIG=${DEEPSPEED_CONFIG-./scripts/zero2.json}   # DEEPSPEED_CONFIG= (empty): plain PyTorch, no DeepSpeed
GLOBAL_BATCH_SIZE=${GLOBAL_BATCH_SIZE:-256}
PER_DEVICE_BATCH_SIZE=${PER_DEVICE_BATCH_SIZE:-32}
LEARNING_RATE=${LEARNING_RATE:-5e-4}
NUM_EPOCHS=${NUM_EPOCHS:-1}
MODEL_MAX_LENGTH=${MODEL_MAX_LENGTH:-2048}
BF16=${BF16:-True}
TF32=${TF32:-True}
GRADIENT_CHECKPOINTING=${GRADIENT_CHECKPOINTING:-True}
NUM_WORKERS=${NUM_WORKERS:-4}
SAVE_STEPS=${SAVE_STEPS:-24000}
SAVE_TOTAL_LIMIT=${SAVE_TOTAL_LIMIT:-1}
LOGGING_STEPS=${LOGGING_STEPS:-1}
REPORT_TO=${REPORT_TO:-none}
SEED=${SEED:-42}
TASK_HEAD_LR_MULTIPLIER=${TASK_HEAD_LR_MULTIPLIER:-1.0}   # the task head's lr as a fraction of the connector's
GRAD_ACCUM=${GRAD_ACCUM:-$(grad_accum "${GLOBAL_BATCH_SIZE}" "${PER_DEVICE_BATCH_SIZE}" "${WORLD_SIZE_TOTAL}")}

launch_cmd
set -x
"${LAUNCH[@]}" llava_vitsplit.train \
  ${PRESET:+--preset "${PRESET}"} \
  ${DEEPSPEED_CONFIG:+--deepspeed "${DEEPSPEED_CONFIG}"} \
  --model_name_or_path "${MODEL_NAME_OR_PATH}" \
  --vision_tower "${VISION_TOWER}" \
  --version plain \
  --data_path "${DATA_PATH}" \
  --image_folder "${IMAGE_FOLDER}" \
  --tune_mm_mlp_adapter True \
  --mm_vision_select_layer -2 \
  --image_aspect_ratio pad \
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
  --task_head_lr_multiplier "${TASK_HEAD_LR_MULTIPLIER}" \
  ${DEVICE_ARGS[@]+"${DEVICE_ARGS[@]}"} \
  "$@"
