"""The quickstart's steps, each run once: a step is skipped when its stamp records the same settings.

Training and evaluation run the project's real entry points as subprocesses: ``scripts/pretrain.sh``,
``scripts/finetune.sh`` (one CPU process, plain PyTorch: ``DEEPSPEED_CONFIG=`` empty, ``--use_cpu True``)
and ``python -m lmms_eval`` with the ``llava_vitsplit`` model and the local easy-vqa task. Training runs in
bf16 autocast where the CPU computes bf16 natively and in fp32 elsewhere
(:mod:`llava_vitsplit.util.cpu_precision`); no gradient checkpointing and no data-loader workers (a
135M LLM on a few cores needs neither: recomputation costs about a quarter of a step, and workers only
take cores from the step).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from llava_vitsplit.assets.sources import sha256_file
from llava_vitsplit.presets import train_recipe
from llava_vitsplit.quickstart.budget import VARIANTS, Budget
from llava_vitsplit.quickstart.easy_vqa_task import BLANK_IMAGE_NAME
from llava_vitsplit.train.launch_env import KEEP_FREED_MEMORY, plain_process_env
from llava_vitsplit.util.cpu_precision import CPUPrecision, cpu_precision
from llava_vitsplit.util.step_cache import StepCache

PRESET = "quickstart"


# The stage scripts' variables that override the training recipe (scripts/common.sh).
RECIPE_VARIABLES = (
    "TRAIN_RECIPE", "LEARNING_RATE", "MM_PROJECTOR_LR", "GLOBAL_BATCH_SIZE", "PER_DEVICE_BATCH_SIZE",
    "GRAD_ACCUM", "NUM_EPOCHS", "MODEL_MAX_LENGTH", "TASK_HEAD_LR_MULTIPLIER", "LORA_R", "LORA_ALPHA",
)  # fmt: skip
STAGE_SCRIPTS = {"pretrain": "pretrain.sh", "finetune": "finetune.sh"}  # under <repo>/scripts


class QuickstartError(RuntimeError):
    """A step failed; the message names the step and its log file."""


@dataclass
class Run:
    """One quickstart run: where it writes, which parts and data it uses, and its budget."""

    out_dir: Path
    budget: Budget
    repo: Path = Path(".")  # the repository checkout whose scripts/ the training steps run
    variant: str = "vitsplit"
    vision_tower: str = "playground/models/dinov2-small"
    language_model: str = "playground/models/smollm2-135m-instruct"
    models_root: Path = Path("playground/models")
    data_dir: Path = Path("playground/data/easy_vqa")
    force: bool = False
    threads: int | None = None  # CPU threads per subprocess (None: all cores)
    log: Callable[[str], None] = print
    timings: dict[str, float] = field(default_factory=dict)
    precision: CPUPrecision = field(default_factory=cpu_precision)  # bf16 autocast or fp32 (training)

    def __post_init__(self) -> None:
        if self.variant not in VARIANTS:
            raise ValueError(f"unknown variant {self.variant!r}; valid: {', '.join(VARIANTS)}")
        self.out_dir = Path(self.out_dir)
        self.repo = Path(self.repo).resolve()
        self.steps = StepCache(self.out_dir / "steps", self.force)
        missing = [name for name in STAGE_SCRIPTS.values() if not (self.repo / "scripts" / name).is_file()]
        if missing:
            raise QuickstartError(
                f"{self.repo} is not a llava-vitsplit checkout: no scripts/{', scripts/'.join(missing)} "
                "(run from the repository root or pass --repo)"
            )

    # ---- bookkeeping -------------------------------------------------------------------------------
    def step(self, name: str, settings: dict, outputs: list[Path], fn: Callable[[], None]) -> None:
        """Run ``fn`` unless a stamp shows it finished with ``settings`` and ``outputs`` exist."""
        done = self.steps.finished(name, settings, outputs)
        if done is not None:
            self.timings[name] = done.get("seconds", 0.0)
            self.log(f"[quickstart] {name}: done before ({done.get('seconds', 0):.0f}s), skipped")
            return
        self.log(f"[quickstart] {name} ...")
        self.timings[name] = self.steps.run(name, settings, outputs, fn)
        self.log(f"[quickstart] {name}: {self.timings[name]:.0f}s")

    def _run_logged(self, name: str, cmd: list[str], env: dict[str, str]) -> None:
        # PASSIVE: idle OpenMP threads sleep instead of spinning, which on a busy machine (or with the
        # threads set below the core count) otherwise slows small CPU ops many times over.
        env = dict(env, OMP_WAIT_POLICY="PASSIVE")
        if self.threads:
            env["OMP_NUM_THREADS"] = env["MKL_NUM_THREADS"] = str(self.threads)
        log_path = self.out_dir / "logs" / f"{name}.log"
        log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(log_path, "w") as log_file:
            # The trainer's and lmms-eval's progress bars go to stderr: show them live and keep a log.
            proc = subprocess.Popen(
                cmd, cwd=self.repo, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
            )
            assert proc.stdout is not None
            for chunk in iter(lambda: proc.stdout.read1(4096), b""):
                log_file.write(chunk.decode(errors="replace"))
                sys.stderr.write(chunk.decode(errors="replace"))
                sys.stderr.flush()
            code = proc.wait()
        if code != 0:
            raise QuickstartError(f"{name} failed (exit {code}); see {log_path}")

    # ---- paths ---------------------------------------------------------------------------------------
    @property
    def tower_dir(self) -> Path:
        return self.out_dir / "vision_tower"

    @property
    def pretrain_dir(self) -> Path:
        return self.out_dir / "pretrain"

    @property
    def checkpoint_dir(self) -> Path:
        return self.out_dir / "checkpoint"

    @property
    def eval_dir(self) -> Path:
        return self.out_dir / "eval"

    def data_file(self, stage: str) -> Path:
        name = {"pretrain": "stage1_captions.json", "finetune": "stage2_instruct.json"}[stage]
        if self.variant == "blind":
            return self.out_dir / "data" / name
        return self.data_dir / name

    # ---- steps ---------------------------------------------------------------------------------------
    def assets(self) -> None:
        """Materialise the assets this run uses from the local models folder (hub ids need nothing)."""
        from llava_vitsplit.assets import ASSETS, materialise

        used = {Path(self.vision_tower).resolve(), Path(self.language_model).resolve()}
        for name, spec in ASSETS.items():
            if (Path(self.models_root) / spec.folder).resolve() in used:
                start = time.perf_counter()
                materialise(name, self.models_root, log=self.log)
                self.timings[f"assets:{name}"] = time.perf_counter() - start

    def data(self) -> None:
        from llava_vitsplit.quickstart import easy_vqa

        start = time.perf_counter()
        easy_vqa.convert(
            self.data_dir,
            limit_images=self.budget.limit_images,
            max_turns=self.budget.max_turns,
            caption_share=self.budget.caption_share,
            balanced=self.budget.balanced_yes_no,
        )
        self.timings["data"] = time.perf_counter() - start
        if self.variant == "blind":
            self._blind_data()

    def _blind_data(self) -> None:
        """Copies of both data files whose records all point at one blank image (same text, no vision)."""
        out = self.out_dir / "data"
        out.mkdir(parents=True, exist_ok=True)
        for stage in ("pretrain", "finetune"):
            records = json.loads((self.data_dir / self.data_file(stage).name).read_text())
            for record in records:
                record["image"] = BLANK_IMAGE_NAME
            (out / self.data_file(stage).name).write_text(json.dumps(records))

    def tower(self) -> None:
        from llava_vitsplit.quickstart.tower import sized_tower

        settings = {"source": self.vision_tower, "image_size": self.budget.image_size}
        self.step(
            "vision-tower",
            settings,
            [self.tower_dir / "config.json"],
            lambda: sized_tower(self.vision_tower, self.tower_dir, self.budget.image_size),
        )

    def _stage_overrides(self, stage: str) -> dict[str, str]:
        """The script variables by which this budget departs from the quickstart's training recipe."""
        b = self.budget
        batch, lr = (
            (b.pretrain_batch, b.pretrain_lr) if stage == "pretrain" else (b.finetune_batch, b.finetune_lr)
        )
        env = {"LEARNING_RATE": lr, "MM_PROJECTOR_LR": b.connector_lr if stage == "finetune" else None}
        env.update(GLOBAL_BATCH_SIZE=batch, PER_DEVICE_BATCH_SIZE=batch)  # one process
        return {name: str(value) for name, value in env.items() if value is not None}

    def _train_env(self, stage: str) -> dict[str, str]:
        env = plain_process_env(dict(os.environ))  # one process, no DDP wrapper
        env.update(
            NUM_GPUS="1",
            PRESET=PRESET,
            MODEL_NAME_OR_PATH=self.language_model,
            VISION_TOWER=str(self.tower_dir),
            DATA_PATH=str(self.data_file(stage)),
            IMAGE_FOLDER=str(self.data_dir / "images"),
            OUTPUT_DIR=str(self.pretrain_dir if stage == "pretrain" else self.checkpoint_dir),
            PRETRAIN_DIR=str(self.pretrain_dir),
            # One process on the CPU: plain PyTorch (nothing to shard), so that bf16 is the Trainer's CPU
            # autocast (--use_cpu True) with fp32 weights; bf16 only where the CPU computes it natively.
            DEEPSPEED_CONFIG="",
            BF16=str(self.precision.bf16),
            TF32="False",
            GLIBC_TUNABLES=os.environ.get("GLIBC_TUNABLES", KEEP_FREED_MEMORY),  # the caller's if set
            GRADIENT_CHECKPOINTING="False",
            NUM_WORKERS="0",
            SAVE_STEPS="1000000",
            LOGGING_STEPS="5",
            TOKENIZERS_PARALLELISM="false",
        )
        for name in RECIPE_VARIABLES:
            env.pop(name, None)  # the recipe and this budget's overrides, never the caller's environment
        env.update(self._stage_overrides(stage))
        if Path(self.language_model).is_dir():  # local parts only (the tower folder is always local)
            env.update(HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1")
        return env

    def _train_args(self, stage: str) -> list[str]:
        """The steps and the variant's arguments; the rest is the recipe (``presets/quickstart.json``:
        SmolLM2's ChatML template in stage 2, as inference uses, and random stage-2 batches -- grouping by
        length made each batch one question phrasing, which in a 40-step run left the model answering
        'yes' to every yes/no question)."""
        steps = self.budget.pretrain_steps if stage == "pretrain" else self.budget.finetune_steps
        return ["--max_steps", str(steps), "--use_cpu", "True", *VARIANTS[self.variant]]

    def train(self, stage: str) -> None:
        script = self.repo / "scripts" / STAGE_SCRIPTS[stage]
        out = self.pretrain_dir if stage == "pretrain" else self.checkpoint_dir
        marker = out / ("connector.safetensors" if stage == "pretrain" else "config.json")
        settings = {  # what this stage's result depends on (a stage-2 change keeps stage 1)
            "recipe": train_recipe(PRESET, stage),
            "overrides": self._stage_overrides(stage),
            "data": sha256_file(self.data_file(stage)),
            "variant": self.variant,
            "language_model": self.language_model,
            "vision_tower": self.vision_tower,
            "args": self._train_args(stage),
            "precision": self.precision.name,
            "after": self.steps.finished_at("vision-tower" if stage == "pretrain" else "pretrain"),
        }

        def run() -> None:
            shutil.rmtree(out, ignore_errors=True)
            self._run_logged(stage, ["bash", str(script), *self._train_args(stage)], self._train_env(stage))
            if not marker.is_file():
                raise QuickstartError(f"{stage} finished without writing {marker}")

        self.step(stage, settings, [marker], run)

    def task_name(self) -> str:
        from llava_vitsplit.quickstart.easy_vqa_task import BLIND_TASK_NAME, TASK_NAME

        return BLIND_TASK_NAME if self.variant == "blind" else TASK_NAME

    def evaluate(self) -> None:
        settings = {
            "limit": self.budget.eval_limit,
            "task": self.task_name(),
            "checkpoint": self.steps.finished_at("finetune"),
        }

        def run() -> None:
            shutil.rmtree(self.eval_dir, ignore_errors=True)
            self.eval_dir.mkdir(parents=True)
            cmd = [
                sys.executable,
                "-m",
                "lmms_eval",
                "--model",
                "llava_vitsplit",
                "--model_args",
                f"pretrained={self.checkpoint_dir},dtype=fp32,device=cpu",
                "--include_path",
                str(self.data_dir / "lmms_eval_tasks"),
                "--tasks",
                self.task_name(),
                "--batch_size",
                str(self.budget.eval_batch),
                "--output_path",
                str(self.eval_dir),
                "--log_samples",
            ]
            if self.budget.eval_limit is not None:
                cmd += ["--limit", str(self.budget.eval_limit)]
            env = dict(os.environ, HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1", TRANSFORMERS_OFFLINE="1")
            self._run_logged("evaluate", cmd, env)
            if not list(self.eval_dir.rglob("*_results.json")):
                raise QuickstartError(
                    f"lmms-eval wrote no results under {self.eval_dir}; see the evaluate log"
                )

        self.step("evaluate", settings, [self.eval_dir], run)

    def run_all(self) -> None:
        self.out_dir.mkdir(parents=True, exist_ok=True)
        self.log(f"[quickstart] training precision: {self.precision.describe()}")
        self.assets()
        self.data()
        self.tower()
        self.train("pretrain")
        self.train("finetune")
        self.evaluate()
