"""Linear CKA between every pair of a backbone's layers (the paper's Figure 3).

For hidden states ``h[0..L]`` the patch tokens of all images are stacked into ``X_l`` ``[N, C]``
(``N`` = images x tokens kept per image), centred per feature, and compared with linear CKA
``||X_l^T X_m||_F^2 / (||X_l^T X_l||_F ||X_m^T X_m||_F)`` (Kornblith et al., 2019). The ``[N, N]``
Gram form is used when ``N < C``. High CKA between late blocks shows they could share a frozen prior;
the low-CKA late blocks are the ones worth copying into the task head.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import torch

from llava_vitsplit.backbones.base import FrozenBackbone


def linear_cka_matrix(features: Sequence[torch.Tensor]) -> torch.Tensor:
    """``[M, M]`` linear CKA between ``M`` feature matrices ``[N, C_m]`` of the same ``N`` samples."""
    if not features:
        raise ValueError("need at least one feature matrix")
    n = features[0].shape[0]
    if any(f.shape[0] != n for f in features):
        raise ValueError(
            f"feature matrices must share the sample count, got {[f.shape[0] for f in features]}"
        )
    centred = [(f.double() - f.double().mean(0, keepdim=True)) for f in features]  # [N, C]
    use_gram = n < min(f.shape[1] for f in centred)
    reps = [x @ x.T if use_gram else x for x in centred]  # [N, N] or [N, C]
    m = len(reps)
    cross = torch.zeros(m, m, dtype=torch.float64)
    for i in range(m):
        for j in range(i, m):
            if use_gram:
                value = (reps[i] * reps[j]).sum()  # <K_i, K_j>_F = ||X_i^T X_j||_F^2
            else:
                value = (reps[i].T @ reps[j]).pow(2).sum()
            cross[i, j] = cross[j, i] = value
    norms = cross.diag().clamp_min(1e-30).sqrt()
    return cross / (norms[:, None] * norms[None, :])  # [M, M]


@torch.no_grad()
def layer_features(
    backbone: FrozenBackbone,
    images: Sequence[torch.Tensor],
    tokens_per_image: int | None = None,
    seed: int = 0,
) -> list[torch.Tensor]:
    """Patch tokens of ``h[0..L]`` for normalised ``images`` (each ``[3, H, W]``): ``L + 1`` x ``[N, C]``."""
    generator = torch.Generator().manual_seed(seed)
    per_layer: list[list[torch.Tensor]] = [[] for _ in range(backbone.num_layers + 1)]
    for image in images:
        out = backbone(image[None])
        tokens = out.grid_hw[0] * out.grid_hw[1]
        keep = None
        if tokens_per_image is not None and tokens_per_image < tokens:
            keep = torch.randperm(tokens, generator=generator)[:tokens_per_image]
        for layer, hidden in enumerate(out.hidden_states):
            patch = hidden[0, backbone.num_prefix_tokens :].float().cpu()  # [h*w, C]
            per_layer[layer].append(patch if keep is None else patch[keep])
    return [torch.cat(chunks) for chunks in per_layer]


def save_cka(matrix: torch.Tensor, out_dir: str | Path, title: str = "linear CKA") -> tuple[Path, Path]:
    """Write ``cka.json`` (matrix + layer names; 0 = embeddings, i = block i-1 output) and ``cka.png``."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    layers = ["embed"] + [f"block{i}" for i in range(matrix.shape[0] - 1)]
    json_path = out_dir / "cka.json"
    json_path.write_text(json.dumps({"layers": layers, "cka": matrix.tolist()}, indent=1))
    fig, ax = plt.subplots(figsize=(6, 5))
    im = ax.imshow(matrix.numpy(), vmin=0, vmax=1, cmap="viridis", origin="lower")
    ax.set_xlabel("hidden state h[i] (0 = embeddings)")
    ax.set_ylabel("hidden state h[j]")
    ax.set_title(title)
    fig.colorbar(im, ax=ax)
    fig.tight_layout()
    png_path = out_dir / "cka.png"
    fig.savefig(png_path, dpi=120)
    plt.close(fig)
    return json_path, png_path
