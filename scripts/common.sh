#!/usr/bin/env bash
# Shared by pretrain.sh / finetune.sh / finetune_lora.sh (sourced, not run): world size, gradient
# accumulation and the launcher, all overridable from the environment.
#
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
NUM_GPUS_GIVEN=${NUM_GPUS:-}
if [[ -z "${NUM_GPUS:-}" ]]; then
  NUM_GPUS=$(nvidia-smi -L 2>/dev/null | grep -c '^GPU' || true)
  [[ "${NUM_GPUS}" -ge 1 ]] || NUM_GPUS=1
fi
if [[ -n "${HOSTFILE:-}" ]]; then
  [[ -f "${HOSTFILE}" ]] || { echo "HOSTFILE=${HOSTFILE} not found" >&2; exit 2; }
  NNODES=${NNODES:-$(grep -cvE '^[[:space:]]*(#|$)' "${HOSTFILE}")}
fi
NNODES=${NNODES:-1}
WORLD_SIZE_TOTAL=$(( NUM_GPUS * NNODES ))
if [[ -n "${LAUNCHER:-}" && -z "${NUM_GPUS_GIVEN}" ]]; then
  WORLD_SIZE_TOTAL=${WORLD_SIZE:-1}  # a custom launcher without NUM_GPUS: its WORLD_SIZE (1 for "python -m")
fi

# gradient_accumulation_steps = global batch / (per-device batch x world size), exact or an error.
grad_accum() {
  local global=$1 per_device=$2 world=$3
  local denom=$(( per_device * world ))
  if (( global % denom != 0 )); then
    echo "GLOBAL_BATCH_SIZE=${global} is not a multiple of PER_DEVICE_BATCH_SIZE=${per_device} x ${world} processes" >&2
    exit 2
  fi
  echo $(( global / denom ))
}

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
