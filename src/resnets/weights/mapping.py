"""Parameter names of other ecosystems onto ours (torchvision's), and back for Caffe's.

All framework-specific knowledge lives here, never in the model files: Keras's layer names and HWIO kernels,
Paddle's `_mean` / `_variance` and (in, out) linear weights, Caffe's `res4b22_branch2a_weights`.

Example:
    >>> from_caffe({"conv1_weights": w})["conv1.weight"] is w
    True
"""

from __future__ import annotations

import json
import re

import numpy as np
import torch

from resnets.weights.readers import WeightsError

BN_FIELDS = {"scale": "weight", "offset": "bias", "mean": "running_mean", "variance": "running_var"}
KERAS_BN = ("weight", "bias", "running_mean", "running_var")  # gamma, beta, moving_mean, moving_variance
CAFFE_BRANCH = {"2a": "1", "2b": "2", "2c": "3"}


def naming_of(keys: list[str]) -> str:
    """Which ecosystem's names a state_dict uses: 'caffe', 'paddle' or 'torch' (torchvision and timm agree)."""
    if any(re.match(r"(res\d[a-z]\d*_branch|bn_conv1_|conv1_weights)", key) for key in keys):
        return "caffe"
    if any(key.endswith(("._mean", "._variance")) for key in keys):
        return "paddle"
    return "torch"


def _linear_weight(value: torch.Tensor) -> torch.Tensor:
    """Paddle and Caffe-by-Paddle keep fc weights as (in, out); torch as (out, in)."""
    return value.t().contiguous()


def from_paddle(tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """paddle.vision ResNets: torchvision's names, BN statistics as `_mean`/`_variance`, fc as (in, out)."""
    out = {}
    for key, value in tensors.items():
        key = key.replace("._mean", ".running_mean").replace("._variance", ".running_var")
        out[key] = _linear_weight(value) if key == "fc.weight" else value
    return out


def _caffe_block_index(tag: str) -> int:
    """'a' -> 0, 'c' -> 2, 'b7' -> 7: letters, or 'b' and a number for long stages."""
    return int(tag[1:]) if len(tag) > 1 else ord(tag) - ord("a")


def from_caffe(tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Names of the original Caffe release and of Paddle's static ResNet (seed 000)."""
    out: dict[str, torch.Tensor] = {}
    unit = re.compile(r"^(bn|res)(\d)([a-z]\d*)_branch(1|2[a-c])_(weights|scale|offset|mean|variance)$")
    stem = re.compile(r"^(conv1_weights|bn_conv1_(scale|offset|mean|variance))$")
    for key, value in tensors.items():
        if match := unit.match(key):
            kind, stage, block, branch, field = match.groups()
            prefix = f"layer{int(stage) - 1}.{_caffe_block_index(block)}."
            if branch == "1":
                name = prefix + ("downsample.0.weight" if kind == "res" else f"downsample.1.{BN_FIELDS[field]}")
            else:
                index = CAFFE_BRANCH[branch]
                name = prefix + (f"conv{index}.weight" if kind == "res" else f"bn{index}.{BN_FIELDS[field]}")
            out[name] = value
        elif match := stem.match(key):
            out["conv1.weight" if key == "conv1_weights" else f"bn1.{BN_FIELDS[match.group(2)]}"] = value
        elif re.match(r"^fc.*(w_0|weights)$", key):
            out["fc.weight"] = _linear_weight(value)
        elif re.match(r"^fc.*(b_0|offset|bias)$", key):
            out["fc.bias"] = value
        else:
            out[key] = value  # left for the loader to report as unexpected
    return out


def to_caffe(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Our names as seed 000's Paddle program names them (res4b1.. for long fourth stages), fc as `fc_0.*`."""
    blocks_per_stage: dict[int, int] = {}
    for key in state_dict:
        if match := re.match(r"^layer(\d)\.(\d+)\.", key):
            stage, block = int(match.group(1)), int(match.group(2))
            blocks_per_stage[stage] = max(blocks_per_stage.get(stage, 0), block + 1)
    field_names = {v: k for k, v in BN_FIELDS.items()}
    out = {}
    for key, value in state_dict.items():
        if key.endswith("num_batches_tracked"):
            continue
        if key in ("fc.weight", "fc.bias"):
            out["fc_0.w_0" if key == "fc.weight" else "fc_0.b_0"] = _linear_weight(value) if value.ndim == 2 else value
            continue
        if key.startswith(("conv1.", "bn1.")):
            out["conv1_weights" if key == "conv1.weight" else f"bn_conv1_{field_names[key.split('.')[-1]]}"] = value
            continue
        stage, block, *rest = key.split(".")
        stage_number, index = int(stage[len("layer") :]), int(block)
        numbered = stage_number == 3 and blocks_per_stage[stage_number] > 6
        tag = ("a" if index == 0 else f"b{index}") if numbered else chr(ord("a") + index)
        unit = f"{stage_number + 1}{tag}"
        if rest[0] == "downsample":
            branch, is_conv = "1", rest[1] == "0"
        else:
            branch, is_conv = {"1": "2a", "2": "2b", "3": "2c"}[rest[0][-1]], rest[0].startswith("conv")
        if is_conv:
            out[f"res{unit}_branch{branch}_weights"] = value
        else:
            out[f"bn{unit}_branch{branch}_{field_names[rest[-1]]}"] = value
    return out


def _keras_layer_target(layer: str, preact: bool) -> str | None:
    """Our module name for a Keras ResNet layer name, or None for a layer we do not know."""
    fixed = {"conv1_conv": "conv1", "conv1_bn": "bn1", "post_bn": "post_bn", "predictions": "fc"}
    if layer in fixed:
        return fixed[layer]
    match = re.match(r"^conv(\d)_block(\d+)_(preact|\d)_(conv|bn)$", layer)
    if not match:
        return None
    stage, block, position, kind = match.groups()
    prefix = f"layer{int(stage) - 1}.{int(block) - 1}."
    if position == "0":
        return prefix + ("downsample.0" if kind == "conv" else "downsample.1")
    if position == "preact":
        return prefix + "bn1"
    # V2 numbers its norms after the pre-activation one: `_1_bn` is our bn2.
    return prefix + (f"conv{position}" if kind == "conv" else f"bn{int(position) + preact}")


def _is_preact(layers: dict[str, list[np.ndarray]]) -> bool:
    """A Keras ResNetV2 (pre-activation) file: its blocks carry `*_preact_bn` layers."""
    return any(name.endswith("_preact_bn") for name in layers)


def keras_preprocessing(layers: dict[str, list[np.ndarray]]) -> dict[str, str]:
    """The input a keras.applications ResNet was trained on, as weights metadata: V2 nets take RGB scaled to -1..1
    ("tf" mode); v1 nets BGR in 0..255 less the ImageNet mean ("caffe" mode), which is RGB with that mean and a
    1/255 scale once the stem's input channels are reversed (`channel_order` "bgr": `load_trained` reverses them).

    Example:
        >>> keras_preprocessing(read_keras(Path("ResNet50V2.h5"), "keras_h5"))["mean"]
        '[0.5, 0.5, 0.5]'
    """
    if _is_preact(layers):
        return {"mean": json.dumps([0.5] * 3), "std": json.dumps([0.5] * 3)}
    caffe_mean_rgb = [123.68 / 255, 116.779 / 255, 103.939 / 255]
    return {"mean": json.dumps(caffe_mean_rgb), "std": json.dumps([1 / 255] * 3), "channel_order": "bgr"}


def from_keras(layers: dict[str, list[np.ndarray]]) -> dict[str, torch.Tensor]:
    """keras.applications ResNet50/101/152 and ResNet50V2/101V2/152V2 weights, per Keras layer name."""
    preact = _is_preact(layers)
    out: dict[str, torch.Tensor] = {}
    for layer, arrays in layers.items():
        target = _keras_layer_target(layer, preact)
        if target is None:
            out[f"keras:{layer}"] = torch.from_numpy(np.asarray(arrays[0]))  # reported as unexpected
            continue
        tensors = [torch.from_numpy(np.ascontiguousarray(a)) for a in arrays]
        kernel_and_bias = len(tensors) == 2 or (len(tensors) == 1 and tensors[0].ndim == 4)  # a conv's bias is optional
        if len(tensors) != 4 and not kernel_and_bias:
            shapes = ", ".join(str(tuple(t.shape)) for t in tensors) or "none"
            raise WeightsError(f"Keras layer {layer!r}: {len(tensors)} weight arrays ({shapes}), not a kernel and bias")
        if len(tensors) == 4:  # BatchNormalization
            out.update({f"{target}.{field}": t for field, t in zip(KERAS_BN, tensors, strict=True)})
        elif tensors[0].ndim == 4:  # Conv2D kernel: (H, W, in, out) -> (out, in, H, W)
            out[f"{target}.weight"] = tensors[0].permute(3, 2, 0, 1).contiguous()
            if len(tensors) > 1:
                out[f"{target}.bias"] = tensors[1]
        else:  # Dense kernel: (in, out)
            out[f"{target}.weight"] = _linear_weight(tensors[0])
            out[f"{target}.bias"] = tensors[1]
    return out
