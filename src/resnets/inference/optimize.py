"""Inference at the limit of the CPU: BN folded into the convs, channels_last, inductor with frozen weights, bf16
where the CPU has it natively, and int8 through ONNX Runtime's static QDQ quantization calibrated on real images.
Which runtime serves a precision (torch eager, torch compiled, ONNX Runtime, OpenVINO) is measured on the machine at
hand: on an Intel CPU with AMX, OpenVINO's bf16 and int8 kernels were 2x and 3x inductor's bf16 on ResNet-50.

Why ONNX Runtime for int8: PyTorch's own post-training quantization (FX graph mode) is deprecated in torch 2.14 and
its successor (PT2E) moved to the separate torchao package; ONNX Runtime's quantizer is maintained, runs u8 x s8
kernels on AVX2 and VNNI, and measured faster here (`benchmarks/inference_precision.py`, `resnets bench`).

Example:
    >>> fast = optimize_for_inference(model, dtype="int8", calibration=images[:256])
    >>> logits = fast(images)
"""

from __future__ import annotations

import copy
import dataclasses
import enum
import functools
import importlib.util
import math
import shutil
import tempfile
import time
import warnings
from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn

from resnets.errors import RuntimeUnsupported
from resnets.hardware import Precision, can_compile, cpu_has_native_bf16, cpu_has_vnni
from resnets.models import fold_batchnorm, input_size

# What optimize_for_inference serves (fp16 is a GPU training format here).
PRECISIONS = (Precision.FP32, Precision.BF16, Precision.INT8)


class Runtime(str, enum.Enum):
    """Who runs the optimized model; AUTO times each one that runs the asked precision and keeps the fastest."""

    AUTO = "auto"
    TORCH = "torch"  # eager, or inductor with frozen weights: fp32 and bf16
    ONNXRUNTIME = "onnxruntime"  # the exported ONNX graph: fp32 and int8 (QDQ)
    OPENVINO = "openvino"  # the same ONNX graphs compiled by OpenVINO: fp32, bf16 (its precision hint) and int8

    def __str__(self) -> str:
        return self.value

    @property
    def precisions(self) -> tuple[Precision, ...]:
        return {
            Runtime.TORCH: (Precision.FP32, Precision.BF16),
            Runtime.ONNXRUNTIME: (Precision.FP32, Precision.INT8),
        }.get(self, PRECISIONS)

    def serves(self, dtype: str) -> bool:
        return dtype == Precision.AUTO or dtype in self.precisions


@dataclasses.dataclass
class InferenceModel:
    """A model ready to serve: call it on a normalized float batch (N, C, H, W); it returns fp32 logits."""

    run: Callable[[torch.Tensor], torch.Tensor]
    dtype: str
    runtime: str  # "torch eager", "torch compiled", "onnxruntime" or "openvino"
    choices: dict[str, dict[str, float]] = dataclasses.field(default_factory=dict)  # dtype="auto": what was measured

    training = False  # stands in for an eval-mode nn.Module wherever one is only called (evaluate, predict)

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        return self.run(images)

    def eval(self) -> InferenceModel:
        return self

    def train(self, mode: bool = True) -> InferenceModel:
        if mode:
            raise ValueError("an optimized inference model cannot be trained; train the nn.Module it came from")
        return self


def optimize_for_inference(
    model: nn.Module,
    dtype: str = "auto",
    *,
    calibration: torch.Tensor | None = None,
    compile: bool | None = None,
    runtime: str = "auto",
    batch_size: int = 16,
) -> InferenceModel:
    """The fastest way we know to run `model` at `dtype` on this machine.

    dtype: fp32 | bf16 | int8 | auto (every precision the CPU runs natively). runtime: torch | onnxruntime |
    openvino | auto (every runtime that runs the precision). Where more than one combination is left, each is timed
    and the fastest whose top-1 agrees with fp32 on >= 98% of the calibration images is returned (if none does, the
    one that agrees most), with what was measured in `.choices`. int8 needs `calibration`: a few hundred real,
    normalized images. compile: inductor with frozen weights (None = wherever a C++ compiler is present, timed
    against eager). batch_size: the batch the caller will mostly send; the candidates are timed on it, since the
    fastest runtime changes with the batch.

    Example:
        >>> optimize_for_inference(create_model("resnet20").eval(), "fp32")(torch.randn(8, 3, 32, 32)).shape
        torch.Size([8, 10])
    """
    if dtype != Precision.AUTO and dtype not in PRECISIONS:
        raise ValueError(f"dtype {dtype!r} is not one of auto, {', '.join(map(str, PRECISIONS))}")
    if runtime not in list(Runtime):
        raise ValueError(f"runtime {runtime!r} is not one of {', '.join(map(str, Runtime))}")
    runtime = Runtime(runtime)
    if calibration is not None and (calibration.ndim != 4 or len(calibration) == 0):
        shape = tuple(calibration.shape)
        raise ValueError(f"calibration must be a non-empty batch of images (N, C, H, W), got shape {shape}")
    if dtype == Precision.INT8 and calibration is None:
        raise ValueError("int8 needs calibration images: a few hundred real, normalized images")
    if batch_size < 1:
        raise ValueError(f"batch_size {batch_size}: the runtimes are timed on batches of at least one image")
    if not runtime.serves(dtype):
        raise ValueError(f"the {runtime} runtime runs {' and '.join(map(str, runtime.precisions))}, not {dtype}")
    if dtype == Precision.AUTO or runtime == Runtime.AUTO:
        dtypes = PRECISIONS if dtype == Precision.AUTO else (Precision(dtype),)
        return _fastest_accurate(model, dtypes, runtime, calibration, compile, batch_size)
    with tempfile.TemporaryDirectory() as folder:
        compiled = can_compile() if compile is None else compile
        return _candidate(model, Precision(dtype), runtime, compiled, calibration, folder)


def _candidate(
    model: nn.Module, dtype: Precision, runtime: Runtime, compiled: bool, images: torch.Tensor | None, folder: str
) -> InferenceModel:
    """`model` at `dtype` on one runtime. ONNX Runtime and OpenVINO candidates share one fp32 export and one int8
    graph in `folder`, made at the images' size (the int8 graph is calibrated on them), else at the model's own."""
    if runtime == Runtime.TORCH:
        return _torch_model(model, dtype, compiled)
    onnx_file = Path(folder) / "fp32.onnx"
    if not onnx_file.exists():
        write_onnx(model, onnx_file, input_shape=tuple(images.shape[1:]) if images is not None else None)
    if dtype == Precision.INT8:
        int8_file = Path(folder) / "int8.onnx"
        if not int8_file.exists():
            quantize_onnx(onnx_file, int8_file, images)
        onnx_file = int8_file
    if runtime == Runtime.OPENVINO:
        return _openvino_model(onnx_file, dtype)
    return _onnxruntime_model(onnx_file, dtype)


def _torch_model(model: nn.Module, dtype: str, compile_model: bool) -> InferenceModel:
    device = next(model.parameters()).device
    folded = fold_batchnorm(model).to(memory_format=torch.channels_last)
    # Freezing lets inductor treat the weights as constants: folded further and pre-packed for oneDNN.
    runner = torch.compile(folded, dynamic=False, options={"freezing": True}) if compile_model else folded
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=dtype == Precision.BF16)

    def run(images: torch.Tensor) -> torch.Tensor:
        with torch.inference_mode(), autocast:
            return runner(images.to(device, memory_format=torch.channels_last)).float()

    return InferenceModel(run, dtype, "torch compiled" if compile_model else "torch eager")


def _natural_input_size(model: nn.Module) -> tuple[int, int, int]:
    """(C, H, W) the model was built for; ImageNet's 224 for a model from elsewhere."""
    return input_size(model.config) if hasattr(model, "config") else (3, 224, 224)


def write_onnx(
    model: nn.Module,
    path: str | Path,
    calibration: torch.Tensor | None = None,
    *,
    input_shape: tuple[int, ...] | None = None,
) -> Path:
    """Export to ONNX (batch dimension dynamic; C, H, W from `input_shape`, else the calibration images, else the
    model's natural size); with calibration images, quantize it to int8 (`quantize_onnx`).

    Example:
        >>> write_onnx(model, "resnet20-int8.onnx", calibration=sample_images(256, 32))
    """
    model = copy.deepcopy(model).cpu().eval()
    if input_shape is None:
        input_shape = tuple(calibration.shape[1:]) if calibration is not None else _natural_input_size(model)
    example = torch.zeros(1, *input_shape)
    with tempfile.TemporaryDirectory() as folder:
        fp32 = Path(folder) / "model.onnx"
        with warnings.catch_warnings():
            # Option A shortcuts subsample with a strided slice, which ONNX cannot constant-fold; nothing is wrong.
            warnings.filterwarnings("ignore", message="Constant folding - Only steps=1")
            torch.onnx.export(
                model,
                (example,),
                str(fp32),
                input_names=["images"],
                output_names=["logits"],
                dynamic_axes={"images": {0: "batch"}, "logits": {0: "batch"}},
                dynamo=False,
            )
        if calibration is None:
            shutil.copyfile(fp32, path)
            return Path(path)
        return quantize_onnx(fp32, path, calibration)


def quantize_onnx(fp32: str | Path, path: str | Path, calibration: torch.Tensor) -> Path:
    """Quantize an fp32 ONNX graph to int8 QDQ (per-channel s8 weights, u8 activations, MinMax ranges from the
    calibration images) after ONNX Runtime's own pre-processing (shape inference, BN folding).

    Without VNNI, the u8 x s8 kernels sum pairs of products in 16 bits, which saturates: 7-bit weights
    (reduce_range) avoid it. On resnet20 that took top-1 agreement with fp32 from 93% to 99%.

    Example:
        >>> quantize_onnx("resnet20.onnx", "resnet20-int8.onnx", sample_images(256, 32))
    """
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    class Batches(CalibrationDataReader):
        def __init__(self) -> None:
            self.batches = iter(calibration.cpu().float().split(32))

        def get_next(self) -> dict | None:
            batch = next(self.batches, None)
            return None if batch is None else {"images": batch.numpy()}

    with tempfile.TemporaryDirectory() as folder:
        prepared = Path(folder) / "prepared.onnx"
        quant_pre_process(str(fp32), str(prepared))
        quantize_static(
            str(prepared),
            str(path),
            Batches(),
            quant_format=QuantFormat.QDQ,
            activation_type=QuantType.QUInt8,
            weight_type=QuantType.QInt8,
            per_channel=True,
            reduce_range=not cpu_has_vnni(),
        )
    return Path(path)


def onnxruntime_session(model: str | Path | bytes):
    """An ONNX Runtime CPU session on a file or serialized model, using as many threads as torch does."""
    import onnxruntime

    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = torch.get_num_threads()
    source = model if isinstance(model, bytes) else str(model)
    return onnxruntime.InferenceSession(source, options, providers=["CPUExecutionProvider"])


def _onnxruntime_model(onnx_file: Path, dtype: str) -> InferenceModel:
    session = onnxruntime_session(onnx_file)  # reads the file now: it may be deleted afterwards

    def run(images: torch.Tensor) -> torch.Tensor:
        array = images.detach().cpu().float().contiguous().numpy()
        return torch.from_numpy(session.run(None, {"images": array})[0])

    return InferenceModel(run, dtype, "onnxruntime")


def openvino_precision(compiled) -> Precision:
    """The precision an OpenVINO compiled model really runs its floating-point layers in (it picks bf16 by itself on
    CPUs with native BF16), read back from the compiled model."""
    hint = str(compiled.get_property("INFERENCE_PRECISION_HINT")).lower()
    if "bf16" in hint or "bfloat16" in hint:
        return Precision.BF16
    if "f16" in hint or "float16" in hint:
        return Precision.FP16
    return Precision.FP32


def openvino_runs_bf16() -> bool:
    """Whether OpenVINO itself finds native BF16 on this CPU: its own reading wins over the CPU flags, which a VM or
    a simulated CPU kind may overstate (it would then quietly keep f32 under a bf16 label).

    Example: `openvino_runs_bf16()  # False on an AVX2-only CPU`
    """
    return cpu_has_native_bf16() and "BF16" in _openvino_cpu_capabilities()


@functools.cache
def _openvino_cpu_capabilities() -> tuple[str, ...]:
    import openvino

    return tuple(openvino.Core().get_property("CPU", "OPTIMIZATION_CAPABILITIES"))


def openvino_compile(source: str | Path, dtype: Precision):
    """An OpenVINO CPU model from an ONNX or IR file: bf16 asked for only where the CPU runs it natively (OpenVINO
    would pick it by itself on such a CPU, and fp32 graphs must stay fp32), one latency-tuned stream, as many threads
    as torch uses."""
    import openvino

    if dtype == Precision.BF16 and not openvino_runs_bf16():
        raise RuntimeUnsupported("OpenVINO runs bf16 only on CPUs with native BF16 (AVX-512 BF16 or AMX)")
    # int8 graphs keep their non-quantized layers in bf16 where that is native, as OpenVINO's default does
    bf16 = dtype == Precision.BF16 or (dtype == Precision.INT8 and openvino_runs_bf16())
    config = {
        "PERFORMANCE_HINT": "LATENCY",
        "INFERENCE_NUM_THREADS": torch.get_num_threads(),
        "INFERENCE_PRECISION_HINT": "bf16" if bf16 else "f32",
    }
    compiled = openvino.Core().compile_model(str(source), "CPU", config)
    if dtype == Precision.BF16 and openvino_precision(compiled) != Precision.BF16:
        raise RuntimeUnsupported("OpenVINO runs bf16 only on CPUs with native BF16 (AVX-512 BF16 or AMX)")
    return compiled


def _openvino_model(onnx_file: Path, dtype: Precision) -> InferenceModel:
    request = openvino_compile(onnx_file, dtype).create_infer_request()  # reads the file now

    def run(images: torch.Tensor) -> torch.Tensor:
        array = images.detach().cpu().float().contiguous().numpy()
        return torch.from_numpy(request.infer({0: array}, share_inputs=True)[0])

    return InferenceModel(run, dtype, "openvino")


def _fastest_accurate(
    model: nn.Module,
    dtypes: tuple[Precision, ...],
    runtime: Runtime,
    calibration: torch.Tensor | None,
    compile: bool | None,
    batch_size: int,
) -> InferenceModel:
    # Which runtime is fastest depends on the CPU, the net and the batch (compiled fp32 beat eager 1.3x on ResNet-50
    # but lost on resnet20 at one thread; ONNX Runtime's fp32 beat both on an AVX2 CPU): measure, don't guess.
    if calibration is None and "int8" in dtypes:
        raise ValueError('dtype="auto" needs calibration images to check each precision against fp32')
    device = next(model.parameters()).device
    images = calibration.cpu() if calibration is not None else torch.randn(64, *_natural_input_size(model))
    compiles = [False, True] if compile is None and can_compile() else [bool(compile)]
    # bf16 joins "auto" only where the CPU runs it natively (emulated it is ~6x slower); asked for, it always runs
    bf16_wanted = dtypes == (Precision.BF16,) or device.type == "cuda" or cpu_has_native_bf16()
    # an optional runtime that is not installed is left out of the automatic choice; asked for by name, it is named
    installed = {
        Runtime.OPENVINO: importlib.util.find_spec("openvino") is not None,
        Runtime.ONNXRUNTIME: all(importlib.util.find_spec(name) for name in ("onnxruntime", "onnx")),
    }

    def wanted(dtype: Precision, name: Runtime) -> bool:
        if dtype not in dtypes or not name.serves(dtype) or runtime not in (Runtime.AUTO, name):
            return False
        if dtype == Precision.BF16 and not bf16_wanted:
            return False
        if runtime == Runtime.AUTO and not installed.get(name, True):
            return False
        if name == Runtime.OPENVINO:  # its bf16 needs the CPU's own (it refuses to emulate)
            return device.type == "cpu" and (dtype != Precision.BF16 or openvino_runs_bf16())
        return name == Runtime.TORCH or device.type == "cpu"

    candidates = [(dtype, Runtime.TORCH, compiled) for dtype in PRECISIONS for compiled in compiles]
    candidates += [(dtype, name, False) for name in (Runtime.ONNXRUNTIME, Runtime.OPENVINO) for dtype in PRECISIONS]
    candidates = [(dtype, name, compiled) for dtype, name, compiled in candidates if wanted(dtype, name)]
    if not candidates:
        asked = "/".join(str(dtype) for dtype in dtypes)
        raise ImportError(f"no installed runtime serves {asked} here (int8 needs onnxruntime or openvino)", name="onnx")
    batch = images.repeat(-(-batch_size // len(images)), 1, 1, 1)[:batch_size]
    reference = None
    if "fp32" not in dtypes:
        with torch.inference_mode():
            reference = fold_batchnorm(model)(images.to(device)).cpu()
    built, agreements = [], []
    with tempfile.TemporaryDirectory() as folder:
        for dtype, runtime_name, compiled in candidates:
            candidate = _candidate(model, dtype, runtime_name, compiled, images, folder)
            with torch.inference_mode():
                logits = torch.cat([candidate(part).cpu() for part in images.split(64)])
            reference = logits if reference is None else reference
            agreements.append(float((logits.argmax(1) == reference.argmax(1)).float().mean()))
            for _ in range(2):  # first calls at a new shape create kernels (oneDNN primitives, OpenVINO nodes)
                candidate(batch)
            built.append(candidate)
    seconds = _fastest_calls(built, batch)
    best, choices = None, {}
    for candidate, agreement, call_seconds in zip(built, agreements, seconds, strict=True):
        img_per_s = len(batch) / call_seconds
        choices[f"{candidate.dtype} {candidate.runtime}"] = {"img_per_s": img_per_s, "top1_agreement": agreement}
        # the fastest of those that agree; while none does, the one that agrees most (a fixed dtype asked for on
        # a net with many near-ties, as an untrained one has, is still served, its agreement in .choices)
        rank = (agreement >= 0.98, img_per_s if agreement >= 0.98 else agreement)
        if best is None or rank > best[1]:
            best = (candidate, rank)
    best[0].choices = choices
    return best[0]


def _fastest_calls(
    candidates: list[InferenceModel], batch: torch.Tensor, rounds: int = 5, budget_s: float = 20.0
) -> list[float]:
    """Each candidate's fastest call on `batch` in steady state, over `rounds` rounds that take the candidates in
    turn: on a shared machine a slow spell then falls on every candidate alike, and the fastest call is the one it
    missed (a mean of a few calls let two runtimes within 1.5x of each other swap places from one run to the next).
    Each timed call follows an untimed one of the same candidate: the first call after another runtime's pays for
    that runtime's threads, still spinning, which a caller that keeps to one runtime never meets. Past `budget_s`
    no further round starts after the second (a large net at a large batch would otherwise time for minutes)."""
    fastest = [math.inf] * len(candidates)
    started_all = time.perf_counter()
    for round_index in range(rounds):
        if round_index >= 2 and time.perf_counter() - started_all > budget_s:
            break
        for index, candidate in enumerate(candidates):
            candidate(batch)
            started = time.perf_counter()
            candidate(batch)
            fastest[index] = min(fastest[index], time.perf_counter() - started)
    return fastest
