"""Train-step time and peak memory: ViT-Split-S vs full fine-tuning of DINOv2-S + linear head.

ADE20K-512 configuration (512x512 crops, 150 classes, AdamW); random weights (speed does not depend on
them). FLOPs of one step (matmuls, convolutions, attention; forward + backward) are counted with
``torch.utils.flop_counter`` during the first warm-up step: a load-independent measure of the work.
Variants: ``vitsplit`` (the ``dense-ade20k-s`` preset, deformable 3x3 convs as in the paper),
``vitsplit_plainconv`` (the same with plain 3x3 convs: torchvision's CPU deformable-conv kernel is slow)
and ``full_finetune_linear`` (every DINOv2-S weight trains, BatchNorm + 1x1 head). Each variant runs in its own child process so that peak memory is its own: peak RSS on CPU
(``ru_maxrss``) and the increase over the RSS after the model was built; on CUDA
``torch.cuda.max_memory_allocated``. Prints a JSON line per variant and a table with the ratio.

    .venv/bin/python bench/dense_train_step.py --batch-size 2 --warmup 1 --iters 3
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import platform
import resource
import time
from queue import Empty

VARIANTS = ("vitsplit", "vitsplit_plainconv", "full_finetune_linear")


def _rss_mib() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def _register_flop_formulas() -> None:
    """FLOP formulas torch's counter lacks: CPU flash attention, torchvision's deformable conv.

    Deformable conv: matmul-equivalent MACs x 2 (bilinear sampling not counted); backward = 2x forward.
    """
    import torch
    import torchvision  # noqa: F401  (registers torch.ops.torchvision)
    from torch.utils.flop_counter import register_flop_formula, sdpa_backward_flop_count, sdpa_flop_count

    aten, ops = torch.ops.aten, torch.ops.torchvision

    @register_flop_formula(aten._scaled_dot_product_flash_attention_for_cpu)
    def _attention(q_shape, k_shape, v_shape, *args, out_shape=None, **kwargs) -> int:
        return sdpa_flop_count(q_shape, k_shape, v_shape)

    @register_flop_formula(aten._scaled_dot_product_flash_attention_for_cpu_backward)
    def _attention_backward(grad_shape, q_shape, k_shape, v_shape, *args, out_shape=None, **kwargs) -> int:
        return sdpa_backward_flop_count(grad_shape, q_shape, k_shape, v_shape)

    @register_flop_formula(ops.deform_conv2d)
    def _forward(input_shape, weight_shape, *args, out_shape=None, **kwargs) -> int:
        c_out, c_in, kh, kw = weight_shape
        return 2 * out_shape[0] * c_out * out_shape[2] * out_shape[3] * c_in * kh * kw

    @register_flop_formula(ops._deform_conv2d_backward)
    def _backward(grad_shape, input_shape, weight_shape, *args, out_shape=None, **kwargs) -> int:
        c_out, c_in, kh, kw = weight_shape
        return 4 * grad_shape[0] * c_out * grad_shape[2] * grad_shape[3] * c_in * kh * kw


def run_variant(
    variant: str, batch_size: int, warmup: int, iters: int, size: int, device: str, threads: int | None, queue
) -> None:
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    if threads:
        torch.set_num_threads(threads)
    _register_flop_formulas()

    from llava_vitsplit.dense.baseline import LinearSegmenter
    from llava_vitsplit.dense.build import build_backbone, build_model
    from llava_vitsplit.dense.losses import segmentation_loss
    from llava_vitsplit.dense.optim import build_optimizer
    from llava_vitsplit.dense.presets import get_dense_preset

    torch.manual_seed(0)
    preset = get_dense_preset("dense-ade20k-s")
    if variant == "vitsplit_plainconv":
        preset = preset.replace(adapter={**preset.adapter, "conv_type": "plain"})
    backbone = build_backbone(preset.backbone)
    if variant.startswith("vitsplit"):
        model = build_model([preset], backbone)
        forward = lambda x: model(x)[preset.name]  # noqa: E731
    else:
        model = LinearSegmenter(backbone, preset.num_classes)
        forward = model
    model.to(device).train()
    optimizer = build_optimizer(model, preset)
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    images = torch.randn(batch_size, 3, size, size, device=device)
    labels = torch.randint(0, preset.num_classes, (batch_size, size, size), device=device)
    built_rss = _rss_mib()
    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()

    def step() -> None:
        loss = segmentation_loss(forward(images), labels)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    with FlopCounterMode(display=False) as counter:  # the first warm-up step, counted
        step()
    for _ in range(warmup - 1):
        step()
    if device == "cuda":
        torch.cuda.synchronize()
    times = []
    for _ in range(iters):
        tic = time.perf_counter()
        step()
        if device == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - tic)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    result = {
        "variant": variant,
        "trainable_params": trainable,
        "gflops_per_step": counter.get_total_flops() / 1e9,
        "sec_per_step": sum(times) / len(times),
        "step_times": times,
        "peak_rss_mib": peak,
        "train_rss_increase_mib": peak - built_rss,
    }
    if device == "cuda":
        result["cuda_peak_mib"] = torch.cuda.max_memory_allocated() / 2**20
    queue.put(result)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--batch-size", type=int, default=2, help="paper: 16 (8 per GPU x 2); CPU: 2")
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--iters", type=int, default=3)
    p.add_argument("--size", type=int, default=512)
    p.add_argument("--device", default="cpu")
    p.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=VARIANTS)
    p.add_argument(
        "--threads", type=int, help="torch intra-op threads in each child (default: torch's choice)"
    )
    args = p.parse_args()
    ctx = mp.get_context("spawn")
    results = {}
    for variant in args.variants:
        queue = ctx.Queue()
        proc = ctx.Process(
            target=run_variant,
            args=(
                variant,
                args.batch_size,
                args.warmup,
                args.iters,
                args.size,
                args.device,
                args.threads,
                queue,
            ),
        )
        proc.start()
        while True:
            try:
                results[variant] = queue.get(timeout=5)
                break
            except Empty:
                if not proc.is_alive():
                    raise RuntimeError(f"variant {variant} exited with code {proc.exitcode}") from None
        proc.join()
        print(json.dumps(results[variant]))
    import torch

    print(
        f"\nmachine: {platform.machine()}, {os.cpu_count()} CPUs, torch threads {args.threads or torch.get_num_threads()}, "
        f"load average {os.getloadavg()[0]:.1f}; device {args.device}; batch {args.batch_size} x "
        f"{args.size}x{args.size}; {args.iters} timed steps after {args.warmup} warm-up"
    )
    print(
        f"{'variant':<22} {'trainable':>10} {'GFLOP/step':>11} {'FLOP vs full':>13} {'s/step':>8} {'vs full':>8} "
        f"{'peak RSS MiB':>13} {'train +MiB':>11}"
    )
    full = results.get("full_finetune_linear")
    for r in results.values():
        speed = f"{full['sec_per_step'] / r['sec_per_step']:.2f}x" if full else "-"
        work = f"{full['gflops_per_step'] / r['gflops_per_step']:.2f}x" if full else "-"
        print(
            f"{r['variant']:<22} {r['trainable_params'] / 1e6:>9.1f}M {r['gflops_per_step']:>11.0f} {work:>13} "
            f"{r['sec_per_step']:>8.2f} {speed:>8} "
            f"{r['peak_rss_mib']:>13.0f} {r['train_rss_increase_mib']:>11.0f}"
        )


if __name__ == "__main__":
    main()
