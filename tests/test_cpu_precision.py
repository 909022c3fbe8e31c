"""CPU training precision: bf16 autocast where the CPU computes bf16 natively, fp32 elsewhere.

The decision reads the CPU flags (mocked here: a cpuinfo file or a flag list); the Trainer accepts bf16 on
the CPU with ``use_cpu`` and then autocasts, so the model is built in fp32; the quickstart passes the
decision to the training scripts.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from llava_vitsplit.util.cpu_precision import cpu_flags, cpu_precision

AVX2_FLAGS = "fpu sse sse2 avx fma avx2 bmi2"  # this project's AMD EPYC boxes (no AVX-512)
SAPPHIRE_RAPIDS_FLAGS = AVX2_FLAGS + " avx512f avx512bw avx512_vnni avx512_bf16 amx_bf16 amx_tile"


@pytest.mark.parametrize(
    ("flags", "bf16", "native"),
    [
        (AVX2_FLAGS, False, ()),
        (AVX2_FLAGS + " avx512f avx512bw avx512_vnni", False, ()),  # AVX-512 without BF16: emulated
        (AVX2_FLAGS + " avx512f avx512_bf16", True, ("avx512_bf16",)),
        (AVX2_FLAGS + " amx_bf16 amx_tile", True, ("amx_bf16",)),
        (SAPPHIRE_RAPIDS_FLAGS, True, ("avx512_bf16", "amx_bf16")),
        ("", False, ()),
    ],
)
def test_bf16_only_where_the_cpu_computes_it_natively(flags, bf16, native):
    choice = cpu_precision(flags.split())
    assert choice.bf16 is bf16 and choice.native_flags == native
    assert choice.name == ("bf16" if bf16 else "fp32")
    assert (("natively: " + ", ".join(native)) in choice.describe()) if bf16 else "fp32" in choice.describe()


def test_flags_are_read_from_cpuinfo(tmp_path: Path, monkeypatch):
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text(f"processor\t: 0\nmodel name\t: Test CPU\nflags\t\t: {SAPPHIRE_RAPIDS_FLAGS}\n\n")
    assert "amx_bf16" in cpu_flags(cpuinfo) and "model" not in cpu_flags(cpuinfo)
    assert cpu_flags(tmp_path / "absent") == set()  # no /proc (macOS): no flags, fp32

    import llava_vitsplit.util.cpu_precision as module

    monkeypatch.setattr(module, "CPUINFO", cpuinfo)
    monkeypatch.setattr(module.cpu_flags, "__defaults__", (cpuinfo,))
    assert cpu_precision().bf16 and cpu_precision().native_flags == ("avx512_bf16", "amx_bf16")


def _training_args(tmp_path: Path, **kwargs):
    from llava_vitsplit.train.arguments import TrainingArguments

    return TrainingArguments(output_dir=str(tmp_path), report_to="none", **kwargs)


def test_the_trainer_autocasts_bf16_on_the_cpu_with_fp32_weights(tmp_path: Path, monkeypatch):
    from llava_vitsplit.train import model_setup

    monkeypatch.setattr(model_setup.torch.cuda, "is_available", lambda: False)
    args = _training_args(tmp_path, use_cpu=True, bf16=True)  # transformers 5 accepts bf16 with use_cpu
    assert args.mixed_precision == "bf16"  # accelerate's CPU autocast
    assert model_setup.autocast_on_cpu(args) and model_setup.torch_dtype_for(args) == torch.float32
    assert "bf16 autocast on the CPU, fp32 weights and optimizer" in model_setup.describe_precision(args)

    fp32 = _training_args(tmp_path, use_cpu=True)
    assert not model_setup.autocast_on_cpu(fp32) and model_setup.torch_dtype_for(fp32) == torch.float32
    line = model_setup.describe_precision(fp32)
    assert line.startswith("precision: fp32 on the CPU; this CPU's choice: ")
    assert cpu_precision().describe() in line


def test_quickstart_passes_the_cpu_precision_to_the_training_scripts(tmp_path: Path, monkeypatch):
    from llava_vitsplit.quickstart.budget import get_budget
    from llava_vitsplit.quickstart.pipeline import Run
    from llava_vitsplit.train.launch_env import KEEP_FREED_MEMORY
    from llava_vitsplit.util.cpu_precision import CPUPrecision

    monkeypatch.delenv("GLIBC_TUNABLES", raising=False)
    repo = Path(__file__).resolve().parents[1]
    for precision, bf16 in ((CPUPrecision(True, ("amx_bf16",)), "True"), (CPUPrecision(False, ()), "False")):
        run = Run(tmp_path / "run", get_budget("smoke"), repo=repo, precision=precision)
        for stage in ("pretrain", "finetune"):
            env = run._train_env(stage)
            assert env["BF16"] == bf16 and env["DEEPSPEED_CONFIG"] == ""  # plain PyTorch: CPU autocast
            assert env["GRADIENT_CHECKPOINTING"] == "False" and env["NUM_WORKERS"] == "0"
            assert env["GLIBC_TUNABLES"] == KEEP_FREED_MEMORY  # freed activations stay in the process
            args = run._train_args(stage)
            assert args[args.index("--use_cpu") + 1] == "True"
