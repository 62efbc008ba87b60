"""Read weight files of every ecosystem into plain {name: tensor} dicts, never running code from them.

Example:
    >>> tensors, meta = read_weights("resnet50.pth")
"""

from __future__ import annotations

import io
import json
import pickle
import re
import warnings
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import torch

from resnets.errors import ResnetsError, first_line
from resnets.safe_pickle import ArrayUnpickler, RefusedGlobal

# Where training checkpoints keep the model's weights, most specific first.
CHECKPOINT_KEYS = ("state_dict_ema", "model_ema", "ema", "state_dict", "model", "model_state")
AVERAGE_KEYS = CHECKPOINT_KEYS[:3]


class WeightsError(ResnetsError, ValueError):
    """A weight file that cannot be read or does not fit the model: one line says why."""


def _first_bytes(path: Path, count: int = 8) -> bytes:
    with path.open("rb") as file:
        return file.read(count)


def detect_format(path: Path) -> str:
    """'torch', 'safetensors', 'keras_h5', 'keras_zip' or 'paddle', from the file's content and suffix."""
    suffix = path.suffix.lower()
    if path.is_file() and path.stat().st_size == 0:
        raise WeightsError(f"{path}: empty file (0 bytes), not weights")
    head = _first_bytes(path)
    if head.startswith(b"\x89HDF"):
        return "keras_h5"
    if suffix in (".h5", ".hdf5"):
        raise WeightsError(f"{path}: not an HDF5 file (Keras .h5 weights begin with the HDF5 signature)")
    if suffix == ".safetensors":
        return "safetensors"
    zip_entries = _zip_entries(path) if head.startswith(b"PK") else None
    if suffix == ".keras" or (zip_entries and "model.weights.h5" in zip_entries):
        return "keras_zip"
    if suffix in (".pdparams", ".pdopt"):
        return "paddle"
    if zip_entries is not None:  # torch.save's archives hold a data.pkl; a .npz or other zip is not weights of ours
        if any(name.endswith("data.pkl") for name in zip_entries):
            return "torch"
        raise WeightsError(f"{path}: a zip archive, but not a PyTorch (.pt) or Keras (.keras) weights file")
    if suffix in (".pth", ".pt", ".bin", ".ckpt", ".tar"):
        return "torch"
    raise WeightsError(f"{path}: unknown weight format (expected .pth, .pt, .safetensors, .h5, .keras or .pdparams)")


def _zip_entries(path: Path) -> list[str] | None:
    """The names in a zip archive; None for a file that is not one."""
    try:
        with zipfile.ZipFile(path) as archive:
            return archive.namelist()
    except (zipfile.BadZipFile, OSError):
        return None


def _unwrap_checkpoint(obj: object, path: Path) -> dict[str, torch.Tensor]:
    """The state_dict inside a training checkpoint, without DDP's `module.` prefix."""
    if isinstance(obj, dict):
        held = [key for key in CHECKPOINT_KEYS if isinstance(obj.get(key), dict) and obj[key]]
        if held:
            if len(held) > 1 and held[0] in AVERAGE_KEYS:  # which of the sets is read is said, not guessed at
                warnings.warn(f"{path}: read its averaged weights {held[0]!r}, not {held[1]!r}", stacklevel=2)
            obj = obj[held[0]]
    if isinstance(obj, dict):
        obj = {key: value for key, value in obj.items() if key != "n_averaged"}  # torch's AveragedModel counter
    if not isinstance(obj, dict) or not obj or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise WeightsError(f"{path}: no state_dict of tensors found (looked for a bare one and {CHECKPOINT_KEYS})")
    prefixes = ("module.", "_orig_mod.")
    return {_strip(key, prefixes): value for key, value in obj.items()}


def _strip(key: str, prefixes: tuple[str, ...]) -> str:
    changed = True
    while changed:
        changed = False
        for prefix in prefixes:
            if key.startswith(prefix):
                key, changed = key[len(prefix) :], True
    return key


def load_plain_torch(path: Path) -> Any:
    """What a PyTorch file holds, read with torch's weights-only unpickler: tensors, numbers, strings and containers,
    never code. A file that is damaged, cut short or holds Python objects gets one line of ours, not torch's advice to
    load it unsafely.

    Example:
        >>> load_plain_torch(Path("runs/r20/checkpoint.pt"))["step"]
    """
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as error:
        text = str(error)
        if "unsupported global" in text.lower():  # torch words it "Unsupported global" or "unsupported GLOBAL"
            raise WeightsError(
                f"{path}: refused: not a plain-tensor checkpoint (it holds Python objects); nothing in it was run"
            ) from None
        found = re.search(r"WeightsUnpickler error:\s*(\S[^\n]*)", text)
        reason = f"damaged pickle data: {found.group(1).strip()}" if found else first_line(error, 160)
    except (RuntimeError, EOFError, IndexError, KeyError, ValueError, zipfile.BadZipFile, OSError) as error:
        # a text or other non-pickle file fails inside the unpickler as KeyError: <its first byte>
        reason = f"{type(error).__name__}: {first_line(error, 160)}" if str(error).strip() else type(error).__name__
        zip_reader = ("central directory", "PytorchStreamReader")  # torch's zip reader on a file cut short
        if isinstance(error, RuntimeError) and any(words in str(error) for words in zip_reader):
            reason = "its zip archive is incomplete or damaged"
    raise WeightsError(f"{path}: unreadable or truncated PyTorch file ({reason})")


def read_torch(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """A PyTorch file's state_dict, and the weights card (`weights_card`: strings) a checkpoint of ours carries."""
    obj = load_plain_torch(path)
    card = obj.get("weights_card") if isinstance(obj, dict) else None
    if not (isinstance(card, dict) and all(isinstance(v, str) for v in card.values())):
        card = {}
    return _unwrap_checkpoint(obj, path), card


def read_safetensors(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(path), framework="pt") as file:
            metadata = dict(file.metadata() or {})
            return {key: file.get_tensor(key) for key in file.keys()}, metadata  # noqa: SIM118 - safe_open is not iterable
    except (SafetensorError, OSError) as error:
        raise WeightsError(f"{path}: unreadable or truncated safetensors file ({error})") from None


def read_paddle(path: Path) -> dict[str, torch.Tensor]:
    """A `.pdparams` pickle (paddle.save or paddle.static.save) of name -> array; BN statistics that
    paddle.static.save puts in the `.pdopt` beside it are read too."""
    tensors: dict[str, torch.Tensor] = {}
    for part in (path, path.with_suffix(".pdopt")):
        if part != path and (path.suffix != ".pdparams" or not part.exists()):
            continue
        try:
            obj = ArrayUnpickler(io.BytesIO(part.read_bytes())).load()
        except RefusedGlobal as error:
            raise WeightsError(f"{part}: refused: {error}; nothing in it was run") from None
        except (pickle.UnpicklingError, EOFError, ValueError, TypeError) as error:
            # a text file usually fails as "invalid load key, '<'." (pickle's period dropped inside our brackets)
            reason = first_line(error).rstrip(".")
            raise WeightsError(f"{part}: unreadable or truncated Paddle file ({reason})") from None
        if not isinstance(obj, dict):
            raise WeightsError(f"{part}: expected a dict of arrays, found {type(obj).__name__}")
        for key, value in obj.items():
            # from the .pdopt only the BN statistics the .pdparams lacks: its optimizer state is no weight, and a
            # stale one must not override the weights asked for
            beside = part != path and (key in tensors or not key.endswith(("mean", "variance")))
            if isinstance(value, np.ndarray) and not beside:
                tensors[key] = torch.from_numpy(np.ascontiguousarray(value))
    if not tensors:
        raise WeightsError(f"{path}: no arrays found")
    return tensors


def _keras_snake_case(name: str) -> str:
    """Keras's own rule for generated names: 'Conv2D' -> 'conv2d', 'BatchNormalization' -> 'batch_normalization'."""
    name = re.sub(r"(.)([A-Z][a-z]+)", r"\1_\2", name)
    return re.sub(r"([a-z])([A-Z])", r"\1_\2", name).lower()


def read_keras(path: Path, fmt: str) -> dict[str, list[np.ndarray]]:
    """Keras weights per layer name, in the layer's own order (kernel, bias; gamma, beta, mean, variance)."""
    import h5py

    def layers_of_legacy_h5(file: h5py.File) -> dict[str, list[np.ndarray]]:
        root = file.get("model_weights", file)
        out = {}
        for layer in root.attrs.get("layer_names", list(root.keys())):
            layer = layer.decode() if isinstance(layer, bytes) else layer
            group = root[layer]
            names = [n.decode() if isinstance(n, bytes) else n for n in group.attrs.get("weight_names", [])]
            if names:
                out[layer] = [np.asarray(group[name]) for name in names]
        return out

    def layers_of_v3(file: h5py.File, config: dict) -> dict[str, list[np.ndarray]]:
        # A .keras archive stores layer weights under generated names ("conv2d_3": the fourth Conv2D in the
        # model's layer order); the config's layer list recovers the real names.
        counts: dict[str, int] = {}
        out = {}
        for layer in config["config"]["layers"]:
            base = _keras_snake_case(layer["class_name"])
            stored = base if not counts.get(base) else f"{base}_{counts[base]}"
            counts[base] = counts.get(base, 0) + 1
            variables = file["layers"].get(stored, {}).get("vars", {})
            if len(variables):
                out[layer["config"]["name"]] = [np.asarray(variables[str(i)]) for i in range(len(variables))]
        return out

    try:
        if fmt == "keras_zip":
            with zipfile.ZipFile(path) as archive:
                config = json.loads(archive.read("config.json"))
                with h5py.File(io.BytesIO(archive.read("model.weights.h5")), "r") as file:
                    return layers_of_v3(file, config)
        with h5py.File(path, "r") as file:
            return layers_of_legacy_h5(file)
    except (OSError, KeyError, zipfile.BadZipFile, json.JSONDecodeError) as error:
        raise WeightsError(f"{path}: unreadable or truncated Keras file ({first_line(error)})") from None
