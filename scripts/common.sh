#!/usr/bin/env bash
# Shared by pretrain.sh / finetune.sh / finetune_lora.sh (sourced, not run): the launcher, the world size
# and the one argument list of `llava_vitsplit.train`, all overridable from the environment.
#
# The hyperparameters come from the training recipe, the `train` block of llava_vitsplit/presets/
# TRAIN_RECIPE.json for the stage (default TRAIN_RECIPE: PRESET, or llava-v1.5-7b when PRESET is empty).
# An environment variable that is set (and not empty) overrides its recipe entry; one that is not set
# passes nothing, so the recipe applies:
#   LEARNING_RATE  GLOBAL_BATCH_SIZE  PER_DEVICE_BATCH_SIZE  NUM_EPOCHS  MODEL_MAX_LENGTH
#   TASK_HEAD_LR_MULTIPLIER  MM_PROJECTOR_LR  LORA_R  LORA_ALPHA
#   GRAD_ACCUM   gradient accumulation steps (default: the trainer derives them from the global batch:
#                GLOBAL / (PER_DEVICE x WORLD_SIZE), an error unless exact)
#   MODEL_NAME_OR_PATH / VISION_TOWER   the parts (default: the preset's)
# Run settings, with defaults: BF16 TF32 GRADIENT_CHECKPOINTING (True), NUM_WORKERS (4), SAVE_TOTAL_LIMIT
# (1), LOGGING_STEPS (1), REPORT_TO (none), SEED (42), PACKING (False: True packs each micro-batch's samples
# into rows of up to MODEL_MAX_LENGTH tokens, same loss); SAVE_STEPS and DEEPSPEED_CONFIG per stage script.
#
# Launch:
#   NUM_GPUS     GPUs per node (default: what nvidia-smi lists, at least 1)
#   HOSTFILE     DeepSpeed hostfile ("host slots=N" per line) for multi-node runs; NNODES defaults to its
#                number of hosts. Run the script on the first host; the launcher reaches the others by ssh.
#   MASTER_ADDR / MASTER_PORT   rendezvous (default: the launcher's)
#   LAUNCHER     replaces "deepspeed ... --module", e.g. LAUNCHER="python -m" (one process, no launcher)
#                or LAUNCHER="torchrun --nproc_per_node 8 -m"
#   CPU_PROCESSES  N processes on the CPU of this machine, no GPU (tests, debugging several ranks):
#                torchrun --nproc_per_node N (or LAUNCHER, which must then start N processes), DeepSpeed's
#                CPU accelerator (DS_ACCELERATOR=cpu) and the trainer's --use_cpu True --ddp_backend gloo. Without --use_cpu, accelerate finds no GPU
#                backend and runs each process as a world of one.

DEVICE_ARGS=()
if [[ -n "${CPU_PROCESSES:-}" ]]; then
  NUM_GPUS=${CPU_PROCESSES}
  export DS_ACCELERATOR=cpu
  LAUNCHER=${LAUNCHER:-torchrun --nproc_per_node ${CPU_PROCESSES} --master_addr ${MASTER_ADDR:-127.0.0.1} --master_port ${MASTER_PORT:-29500} -m}
  DEVICE_ARGS=(--use_cpu True --ddp_backend gloo)
fi
if [[ -z "${NUM_GPUS:-}" ]]; then
  NUM_GPUS=$(nvidia-smi -L 2>/dev/null | grep -c '^GPU' || true)
  [[ "${NUM_GPUS}" -ge 1 ]] || NUM_GPUS=1
fi
if [[ -n "${HOSTFILE:-}" ]]; then
  [[ -f "${HOSTFILE}" ]] || { echo "HOSTFILE=${HOSTFILE} not found" >&2; exit 2; }
  NNODES=${NNODES:-$(grep -cvE '^[[:space:]]*(#|$)' "${HOSTFILE}")}
fi
NNODES=${NNODES:-1}

launch_cmd() {
  if [[ -n "${LAUNCHER:-}" ]]; then
    read -r -a LAUNCH <<< "${LAUNCHER}"
  else
    LAUNCH=(deepspeed)
    [[ -n "${HOSTFILE:-}" ]] && LAUNCH+=(--hostfile "${HOSTFILE}" --num_nodes "${NNODES}")
    LAUNCH+=(--num_gpus "${NUM_GPUS}")
    [[ -n "${MASTER_ADDR:-}" ]] && LAUNCH+=(--master_addr "${MASTER_ADDR}")
    [[ -n "${MASTER_PORT:-}" ]] && LAUNCH+=(--master_port "${MASTER_PORT}")
    LAUNCH+=(--module)
  fi
}

PRESET=${PRESET-llava-v1.5-7b}            # connector settings; PRESET= (empty) to give them as arguments
TRAIN_RECIPE=${TRAIN_RECIPE:-${PRESET:-llava-v1.5-7b}}
BF16=${BF16:-True}
TF32=${TF32:-True}
GRADIENT_CHECKPOINTING=${GRADIENT_CHECKPOINTING:-True}
NUM_WORKERS=${NUM_WORKERS:-4}
SAVE_TOTAL_LIMIT=${SAVE_TOTAL_LIMIT:-1}
LOGGING_STEPS=${LOGGING_STEPS:-1}
REPORT_TO=${REPORT_TO:-none}
SEED=${SEED:-42}
PACKING=${PACKING:-False}

# "--flag VALUE" for each variable that is set and not empty (the recipe's value otherwise).
RECIPE_OVERRIDES=(
  --model_name_or_path MODEL_NAME_OR_PATH  --vision_tower VISION_TOWER
  --learning_rate LEARNING_RATE  --global_batch_size GLOBAL_BATCH_SIZE
  --per_device_train_batch_size PER_DEVICE_BATCH_SIZE  --gradient_accumulation_steps GRAD_ACCUM
  --num_train_epochs NUM_EPOCHS  --model_max_length MODEL_MAX_LENGTH
  --task_head_lr_multiplier TASK_HEAD_LR_MULTIPLIER  --mm_projector_lr MM_PROJECTOR_LR
  --lora_r LORA_R  --lora_alpha LORA_ALPHA
)
overrides() {
  local i name
  for (( i = 0; i < ${#RECIPE_OVERRIDES[@]}; i += 2 )); do
    name=${RECIPE_OVERRIDES[i+1]}
    [[ -n "${!name:-}" ]] && printf '%s\0%s\0' "${RECIPE_OVERRIDES[i]}" "${!name}"
  done
  return 0
}
# The flags the script sets from variables, "--flag=VARIABLE ...", so run_config.json (and --print_config)
# can name the variable as each setting's source.
env_args() {
  local i name out="--preset=PRESET --train_recipe=TRAIN_RECIPE --deepspeed=DEEPSPEED_CONFIG"
  out+=" --data_path=DATA_PATH --image_folder=IMAGE_FOLDER --output_dir=OUTPUT_DIR --bf16=BF16 --tf32=TF32"
  out+=" --gradient_checkpointing=GRADIENT_CHECKPOINTING --dataloader_num_workers=NUM_WORKERS"
  out+=" --save_steps=SAVE_STEPS --save_total_limit=SAVE_TOTAL_LIMIT --logging_steps=LOGGING_STEPS"
  out+=" --report_to=REPORT_TO --seed=SEED --packing=PACKING --pretrain_mm_mlp_adapter=PRETRAIN_DIR"
  for (( i = 0; i < ${#RECIPE_OVERRIDES[@]}; i += 2 )); do
    name=${RECIPE_OVERRIDES[i+1]}
    [[ -n "${!name:-}" ]] && out+=" ${RECIPE_OVERRIDES[i]}=${name}"
  done
  printf '%s' "${out}"
}

# run_stage STAGE_ARGS... -- EXTRA_ARGS...: launch llava_vitsplit.train with the stage's own arguments
# (DATA_PATH, IMAGE_FOLDER, OUTPUT_DIR, SAVE_STEPS and DEEPSPEED_CONFIG set by the stage script), the
# overrides above and the script's extra arguments, which go to the trainer unchanged.
run_stage() {
  local stage_args=()
  while [[ $# -gt 0 && "$1" != "--" ]]; do stage_args+=("$1"); shift; done
  [[ $# -gt 0 ]] && shift
  local set_vars=()
  mapfile -d '' set_vars < <(overrides)
  launch_cmd
  export LLAVA_VITSPLIT_ENV_ARGS
  LLAVA_VITSPLIT_ENV_ARGS=$(env_args)
  set -x
  "${LAUNCH[@]}" llava_vitsplit.train \
    ${PRESET:+--preset "${PRESET}"} \
    --train_recipe "${TRAIN_RECIPE}" \
    ${DEEPSPEED_CONFIG:+--deepspeed "${DEEPSPEED_CONFIG}"} \
    "${stage_args[@]}" \
    --data_path "${DATA_PATH}" \
    --image_folder "${IMAGE_FOLDER}" \
    --output_dir "${OUTPUT_DIR}" \
    --bf16 "${BF16}" \
    --tf32 "${TF32}" \
    --gradient_checkpointing "${GRADIENT_CHECKPOINTING}" \
    --dataloader_num_workers "${NUM_WORKERS}" \
    --save_strategy steps \
    --save_steps "${SAVE_STEPS}" \
    --save_total_limit "${SAVE_TOTAL_LIMIT}" \
    --logging_steps "${LOGGING_STEPS}" \
    --report_to "${REPORT_TO}" \
    --seed "${SEED}" \
    --packing "${PACKING}" \
    ${set_vars[@]+"${set_vars[@]}"} \
    ${DEVICE_ARGS[@]+"${DEVICE_ARGS[@]}"} \
    "$@"
}
