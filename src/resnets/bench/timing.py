"""Seed 002's benchmark for any model: forward (inference) and forward-backward-step (training) time per batch,
burn-in steps, then timed steps reported as mean ± sd and median, with peer engines in the same process.

Engines run interleaved, one timed step each in turn, so that a noisy shared machine slows all of them alike and
their ratios hold.

Example:
    >>> rows = benchmark(["resnet50"], batch_sizes=[16], mode="both", peers=["torchvision"], iters=20)
"""

from __future__ import annotations

import dataclasses
import enum
import importlib.util
import re
import statistics
import time
import warnings
from collections.abc import Callable, Sequence

import torch
from torch import nn

from resnets.atomic import save_figure
from resnets.data import sample_images
from resnets.hardware import Precision, cpu_has_native_bf16, cpu_name, resolve_device
from resnets.models import CIFAR_DEPTHS, IMAGENET_DEPTHS, create_model, get_entry, list_models


class Mode(str, enum.Enum):
    """What is timed: seed 002's forward pass (infer), forward-backward-SGD step (train), or both."""

    INFER = "infer"
    TRAIN = "train"
    BOTH = "both"

    def __str__(self) -> str:
        return self.value


PEERS = ("torchvision", "timm", "onnxruntime", "openvino")
DEFAULT_PEERS = ("torchvision", "onnxruntime", "openvino")


@dataclasses.dataclass
class BenchRow:
    """One engine, model, mode, dtype and batch size: its timings."""

    engine: str
    model: str
    mode: str
    dtype: str
    runtime: str  # torch eager | torch compiled | onnxruntime | openvino
    batch_size: int
    channels_last: bool
    img_per_s: float
    ms_mean: float
    ms_std: float
    ms_median: float
    peak_memory_mb: float | None
    device: str
    cpu: str
    threads: int
    bf16_native: bool


class Step:
    """One engine's unit of work: a callable that runs one batch (and, for training, a backward and SGD step)."""

    def __init__(self, engine: str, run: Callable[[], object], channels_last: bool, dtype: str, runtime: str) -> None:
        self.engine, self.run, self.channels_last, self.dtype, self.runtime = engine, run, channels_last, dtype, runtime


def default_dtypes(mode: str, device: torch.device) -> list[Precision]:
    """Our default rows: every precision this machine runs natively (int8 for inference where onnxruntime is
    installed, bf16 where the CPU or GPU has it), fp32 always."""
    if device.type == "cuda":
        return [Precision.FP32, Precision.BF16]
    dtypes = [Precision.FP32] + ([Precision.BF16] if cpu_has_native_bf16() else [])
    if mode == Mode.INFER and importlib.util.find_spec("onnxruntime") is not None:
        dtypes.append(Precision.INT8)
    return dtypes


def _ours_infer(model_name: str, x: torch.Tensor, dtype: str, compile_model: bool | None, engine: str) -> Step:
    from resnets.inference.optimize import optimize_for_inference

    model = create_model(model_name).to(x.device).eval()
    calibration = sample_images(256, x.shape[-1]) if dtype == Precision.INT8 else None
    # timed on the benchmark's own batch: the fastest runtime at 16 images need not be the fastest at 64
    fast = optimize_for_inference(
        model, dtype, calibration=calibration, compile=compile_model, runtime=engine, batch_size=len(x)
    )
    fast(x)  # compiles (inductor) outside the timed steps
    return Step("resnets", lambda: fast(x), fast.runtime.startswith("torch"), dtype, fast.runtime)


def _torch_step(
    engine: str,
    model: nn.Module,
    x: torch.Tensor,
    mode: str,
    dtype: str,
    channels_last: bool,
    compile_model: bool = False,
) -> Step:
    device = x.device
    memory_format = torch.channels_last if channels_last else torch.contiguous_format
    x = x.to(memory_format=memory_format)
    model = model.to(device, memory_format=memory_format)
    autocast = torch.autocast(device.type, dtype=Precision(dtype).torch_dtype, enabled=dtype != Precision.FP32)
    runner = torch.compile(model) if compile_model else model
    if mode == Mode.INFER:
        model.eval()

        def run() -> object:
            with torch.inference_mode(), autocast:
                return runner(x)

    else:
        model.train()
        optimizer = torch.optim.SGD(model.parameters(), lr=1e-4, momentum=0.9)
        labels = torch.zeros(len(x), dtype=torch.long, device=device)

        def run() -> object:
            with autocast:
                loss = nn.functional.cross_entropy(runner(x).float(), labels)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            return loss

    return Step(engine, run, channels_last, dtype, "torch compiled" if compile_model else "torch eager")


def _onnxruntime_peer(model: nn.Module, x: torch.Tensor) -> Step:
    """ONNX Runtime as its users run it: the model exported as is, default session options (threads = cores)."""
    import io

    from resnets.inference.optimize import onnxruntime_session

    buffer = io.BytesIO()
    torch.onnx.export(model.eval(), (x,), buffer, input_names=["x"], output_names=["y"], dynamo=False)
    session = onnxruntime_session(buffer.getvalue())
    array = x.numpy()
    return Step("onnxruntime", lambda: session.run(None, {"x": array}), False, str(Precision.FP32), "onnxruntime")


def _openvino_peer(model: nn.Module, x: torch.Tensor) -> Step:
    """OpenVINO as its users run it: convert_model on the PyTorch model, compiled for CPU with default settings. Its
    row says the precision OpenVINO chose (bf16 by itself on CPUs with native BF16), read back from the model."""
    import openvino

    from resnets.inference.optimize import openvino_precision

    with warnings.catch_warnings():  # convert_model traces with torch.jit, which torch now calls deprecated: its choice
        warnings.filterwarnings("ignore", message=r"`torch\.jit\.trace")
        converted = openvino.convert_model(model.eval(), example_input=x)
    compiled = openvino.compile_model(converted, "CPU")
    array = x.numpy()
    return Step("openvino", lambda: compiled(array), False, str(openvino_precision(compiled)), "openvino")


def _torchvision_has(model_name: str) -> bool:
    import torchvision

    return hasattr(torchvision.models, model_name)


def _peer_model(engine: str, model_name: str) -> nn.Module:
    """The peer's own model; the runtimes (onnxruntime, openvino) take torchvision's, or ours as it is (not
    optimized) for the nets torchvision lacks."""
    if engine in ("onnxruntime", "openvino"):
        import torchvision

        if _torchvision_has(model_name):
            return getattr(torchvision.models, model_name)(weights=None)
        return create_model(model_name)
    if engine == "torchvision":
        import torchvision

        if not hasattr(torchvision.models, model_name):
            raise ValueError(f"torchvision has no {model_name!r}")
        return getattr(torchvision.models, model_name)(weights=None)
    if engine == "timm":
        import timm

        return timm.create_model(model_name, pretrained=False)
    raise ValueError(f"unknown peer {engine!r}; choose from {', '.join(PEERS)}")


def build_steps(
    model_name: str,
    batch_size: int,
    mode: str,
    *,
    dtypes: list[str],
    channels_last: bool,
    compile_model: bool | None,
    device: torch.device,
    peers: list[str],
    engine: str = "auto",
) -> list[Step]:
    """Our engine at each dtype, and each peer in its own default configuration (eager, fp32, NCHW); where we run
    bf16, torchvision also runs bf16 with channels_last, its fastest eager setting."""
    entry = get_entry(model_name)
    x = torch.randn(batch_size, *entry.input_size, device=device)
    steps = []
    for dtype in dtypes:
        if mode == Mode.INFER:
            steps.append(_ours_infer(model_name, x, dtype, compile_model, engine))
        elif dtype != Precision.INT8:
            model = create_model(model_name)
            steps.append(_torch_step("resnets", model, x, mode, dtype, channels_last, bool(compile_model)))
        else:  # a row asked for and not given is named, not dropped unsaid
            warnings.warn(f"{model_name}: int8 is an inference precision; no {mode} row for it", stacklevel=2)
    for peer in peers:
        if peer in ("onnxruntime", "openvino"):
            if mode == Mode.INFER and device.type == "cpu":
                build = _onnxruntime_peer if peer == "onnxruntime" else _openvino_peer
                steps.append(build(_peer_model(peer, model_name), x))
            else:
                where = "training" if mode != Mode.INFER else f"a {device.type} device"
                warnings.warn(f"peer {peer}: an inference runtime on the CPU; no row for {where}", stacklevel=2)
            continue
        steps.append(_torch_step(peer, _peer_model(peer, model_name), x, mode, Precision.FP32, False))
        if peer == "torchvision" and Precision.BF16 in dtypes:
            steps.append(_torch_step(peer, _peer_model(peer, model_name), x, mode, Precision.BF16, True))
    return steps


def time_steps(steps: list[Step], *, warmup: int, iters: int, device: torch.device) -> list[list[float]]:
    """Seconds per step for each engine, interleaved: warm-up rounds, then `iters` timed rounds."""

    def once(step: Step) -> float:
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        started = time.perf_counter()
        step.run()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        return time.perf_counter() - started

    for _ in range(warmup):
        for step in steps:
            once(step)
    times = [[] for _ in steps]
    for _ in range(iters):
        for index, step in enumerate(steps):
            times[index].append(once(step))
    return times


def benchmark(
    models: list[str],
    *,
    batch_sizes: list[int],
    mode: str = "both",
    dtypes: list[str] | None = None,
    channels_last: bool = True,
    compile_model: bool | None = None,
    device: str = "cpu",
    peers: list[str] | None = None,
    warmup: int = 10,
    iters: int = 100,
    engine: str = "auto",
) -> list[BenchRow]:
    """Rows of timings: ours at each dtype (default: every precision the machine runs natively) and each peer
    (default: those of torchvision, onnxruntime and openvino that are installed and have the model), for every
    model, batch size and mode. compile_model None = inductor for inference where a C++ compiler is
    present, eager for training (inductor did not pay for CPU training here)."""
    measurable = [p for p in Precision if p != Precision.AUTO]
    unknown = [dtype for dtype in dtypes or [] if dtype not in measurable]
    if unknown:
        raise ValueError(f"dtype {unknown[0]!r} is not one of {', '.join(map(str, measurable))}")
    if mode not in list(Mode):
        raise ValueError(f"mode {mode!r} is not one of {', '.join(map(str, Mode))}")
    if peers is None:
        peers = [name for name in DEFAULT_PEERS if importlib.util.find_spec(name) is not None]
        peers = [name for name in peers if name != "torchvision" or all(_torchvision_has(m) for m in models)]
    unknown = sorted(set(peers) - set(PEERS))
    if unknown:
        raise ValueError(f"unknown peer {unknown[0]!r}; choose from {', '.join(PEERS)}")
    torch_device = resolve_device(device)
    modes = [Mode.INFER, Mode.TRAIN] if mode == Mode.BOTH else [Mode(mode)]
    rows = []
    for model_name in models:
        for batch_size in batch_sizes:
            for current in modes:
                chosen = dtypes or default_dtypes(current, torch_device)
                steps = build_steps(
                    model_name,
                    batch_size,
                    current,
                    dtypes=chosen,
                    channels_last=channels_last,
                    compile_model=compile_model,
                    device=torch_device,
                    peers=peers,
                    engine=engine,
                )
                if torch_device.type == "cuda":
                    torch.cuda.reset_peak_memory_stats(torch_device)
                times = time_steps(steps, warmup=warmup, iters=iters, device=torch_device)
                peak = torch.cuda.max_memory_allocated(torch_device) / 2**20 if torch_device.type == "cuda" else None
                for step, seconds in zip(steps, times, strict=True):
                    mean = statistics.fmean(seconds)
                    rows.append(
                        BenchRow(
                            engine=step.engine,
                            model=model_name,
                            mode=str(current),
                            dtype=str(step.dtype),
                            runtime=step.runtime,
                            batch_size=batch_size,
                            channels_last=step.channels_last,
                            img_per_s=batch_size / mean,
                            ms_mean=1000 * mean,
                            ms_std=1000 * (statistics.stdev(seconds) if len(seconds) > 1 else 0.0),
                            ms_median=1000 * statistics.median(seconds),
                            peak_memory_mb=peak,
                            device=str(torch_device),
                            cpu=cpu_name(),
                            threads=torch.get_num_threads(),
                            bf16_native=cpu_has_native_bf16(),
                        )
                    )
    return rows


def format_rows(rows: list[BenchRow]) -> str:
    """A table with each row's speed relative to the first peer of its group (torchvision when it runs)."""
    lines = [
        f"{'engine':<12} {'runtime':<15} {'model':<16} {'mode':<6} {'dtype':<5} {'batch':>5} {'CL':>3} {'img/s':>8} "
        f"{'ms mean ± sd':>18} {'median':>8} {'vs base':>8}"
    ]
    base: dict[tuple, float] = {}
    for row in rows:
        key = (row.model, row.mode, row.batch_size)
        if row.engine != "resnets" and key not in base:
            base[key] = row.img_per_s
    for row in rows:
        key = (row.model, row.mode, row.batch_size)
        ratio = f"{row.img_per_s / base[key]:.2f}x" if key in base else ""
        lines.append(
            f"{row.engine:<12} {row.runtime:<15} {row.model:<16} {row.mode:<6} {row.dtype:<5} {row.batch_size:>5} "
            f"{'y' if row.channels_last else 'n':>3} {row.img_per_s:>8.1f} {row.ms_mean:>9.1f} ± {row.ms_std:<6.1f} "
            f"{row.ms_median:>8.1f} {ratio:>8}"
        )
    return "\n".join(lines)


def sweep_models(kind: str, models: Sequence[str] = ()) -> list[str]:
    """The nets a depth sweep covers: the paper's depths of the named model's family (CIFAR 20 to 1202, ImageNet 18 to
    152; ImageNet when none is named). Example: `sweep_models("depth", ["resnet20"])[-1] == "resnet1202"`."""
    if kind != "depth":
        return list(models)
    cifar = any(get_entry(name).family == "cifar" for name in models)
    depths = CIFAR_DEPTHS if cifar else IMAGENET_DEPTHS
    # The named model's own variant at each depth the registry has (preact_resnet50 -> preact_resnet18..152).
    named = re.fullmatch(r"(.*(?:resnet|plain))\d+(.*)", models[0]) if models else None
    prefix, suffix = named.groups() if named else ("resnet", "")
    variants = [f"{prefix}{depth}{suffix}" for depth in depths]
    known = set(list_models())
    return [name for name in variants if name in known] or [f"resnet{depth}" for depth in depths]


def plot_rows(rows: list[BenchRow], path: str, by: str = "model") -> str:
    """img/s and achieved GFLOP/s of our rows against depth or batch size, one line per mode and precision."""
    from resnets.bench.profile import profile
    from resnets.train.plots import pyplot

    plt = pyplot()

    ours = [r for r in rows if r.engine == "resnets"]
    figure, (speed, flops) = plt.subplots(1, 2, figsize=(11, 4))
    for mode, dtype in sorted({(r.mode, r.dtype) for r in ours}):
        selected = [r for r in ours if (r.mode, r.dtype) == (mode, dtype)]
        labels = [str(getattr(r, by)) for r in selected]
        # training costs about three forward passes: forward, and a backward of twice its work
        factor = 2 * (3 if mode == Mode.TRAIN else 1)
        achieved = [r.img_per_s * factor * profile(r.model).macs / 1e9 for r in selected]
        speed.plot(labels, [r.img_per_s for r in selected], marker="o", label=f"{mode} {dtype}")
        flops.plot(labels, achieved, marker="o", label=f"{mode} {dtype}")
    speed.set(title="images per second", xlabel=by)
    flops.set(title="achieved GFLOP/s (int8: GOP/s)", xlabel=by)
    for axis in (speed, flops):
        axis.legend()
        axis.grid(alpha=0.3)
    figure.tight_layout()
    return str(save_figure(figure, path))
