"""Where one training step's time goes on this CPU, on synthetic data: the step in three forms, the compiled step's
profile by kind of work, the rate its convolutions reach against this CPU's own matrix-product rate in fp32 and in
the step's precision, what keeping freed host memory saves (page faults), oneDNN's convolution and reorder time in
each memory layout, and 1x1 convolutions against the same work written as matrix products.

What `train_throughput.py` cannot say: its ratio is the whole step against the plain loop; this names the part
that stays. The forms are the plain loop's (NCHW, eager), channels_last eager, and ours (channels_last, compiled),
at the precision `resnets train` picks here (bf16 where native, fp32 elsewhere).

Usage: python benchmarks/train_step_profile.py [--model resnet50] [--batch 16] [--size 224] [--steps 4]
       [--sections forms,profile,rates,memory,onednn,pointwise]
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import os
import re
import resource
import statistics
import subprocess
import sys
import time

import torch
import torch.nn.functional as F
from torch.profiler import ProfilerActivity, profile
from torch.utils.flop_counter import FlopCounterMode

from resnets.hardware import describe_device, resolve_precision, steady_host_memory
from resnets.models import create_model

WARMUP = 2
# What each profiler event measures, by name: the rest of the step is listed as "other".
KINDS = {
    "aten::convolution_backward": "convolution backward",
    "aten::mkldnn_convolution": "convolution forward",
    "aten::_fused_sgd_": "SGD (fused)",
}


class Step:
    """One optimizer step of `model_name` on a fixed synthetic batch, in one memory layout, eager or compiled."""

    def __init__(
        self, args: argparse.Namespace, *, channels_last: bool, compiled: bool, dtype: torch.dtype | None = None
    ) -> None:
        self.layout = torch.channels_last if channels_last else torch.contiguous_format
        self.model = create_model(args.model, num_classes=10).train().to(memory_format=self.layout)
        self.forward = torch.compile(self.model, dynamic=False) if compiled else self.model
        self.optimizer = torch.optim.SGD(self.model.parameters(), lr=0.01, momentum=0.9, fused=True)
        generator = torch.Generator().manual_seed(0)
        images = torch.randn(args.batch, 3, args.size, args.size, generator=generator)
        self.images = images.contiguous(memory_format=self.layout)
        self.labels = torch.randint(0, 10, (args.batch,), generator=generator)
        self.dtype = dtype or resolve_precision("auto", torch.device("cpu"))

    def __call__(self) -> None:
        with torch.autocast("cpu", dtype=self.dtype, enabled=self.dtype != torch.float32):
            logits = self.forward(self.images)
        loss = F.cross_entropy(logits.float(), self.labels)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()

    def images_per_second(self, steps: int) -> float:
        seconds = []
        for index in range(WARMUP + steps):
            started = time.perf_counter()
            self()
            if index >= WARMUP:
                seconds.append(time.perf_counter() - started)
        return len(self.images) / statistics.median(seconds)


def step_forms(args: argparse.Namespace) -> None:
    print("\nthe step in three forms (median img/s after two warm-up steps):")
    forms = {"NCHW, eager (the plain loop's)": (False, False), "channels_last, eager": (True, False)}
    forms["channels_last, compiled (ours)"] = (True, True)
    rates = {
        name: Step(args, channels_last=cl, compiled=c).images_per_second(args.steps) for name, (cl, c) in forms.items()
    }
    baseline = rates["NCHW, eager (the plain loop's)"]
    for name, rate in rates.items():
        print(f"  {name:<34} {rate:8.2f} img/s  {rate / baseline:4.2f}x")


def compiled_profile(args: argparse.Namespace) -> None:
    step = Step(args, channels_last=True, compiled=True)
    seconds = _profiled_seconds(step, args.steps)
    total = sum(seconds.values())
    print(f"\nthe compiled channels_last step, torch.profiler over {args.steps} steps ", end="")
    print(f"({total / args.steps:.2f} s a step):")
    for kind, spent in sorted(seconds.items(), key=lambda item: -item[1]):
        print(f"  {kind:<40} {100 * spent / total:5.1f}%")


def convolution_rates(args: argparse.Namespace) -> None:
    """How near the convolutions run to what this CPU's cores can do: their GFLOP/s in the plain loop's step (fp32,
    NCHW, eager) and in ours (the precision `resnets train` picks, channels_last, compiled), each against a large
    matrix product's in its precision. Convolutions already near that rate leave a step little to gain but the
    precision's own: its matrix-product rate over fp32's."""
    ours = Step(args, channels_last=True, compiled=True)
    steps = {
        "the plain loop's (fp32, NCHW, eager)": Step(args, channels_last=False, compiled=False, dtype=torch.float32),
        f"ours ({_name(ours.dtype)}, channels_last, compiled)": ours,
    }
    matmul = {dtype: _matmul_rate(dtype) for dtype in dict.fromkeys(step.dtype for step in steps.values())}
    print(f"\nconvolution GFLOP/s against a 2048-square matrix product's ({torch.get_num_threads()} threads):")
    for dtype, rate in matmul.items():
        print(f"  {_name(dtype) + ' matrix product':<54} {rate:7.1f}")
    achieved = []
    for name, step in steps.items():
        seconds = _profiled_seconds(step, args.steps)
        flops = _convolution_flops(step)
        achieved.append(flops / (seconds["convolution forward"] + seconds["convolution backward"]) * args.steps / 1e9)
        print(f"  {name + ' convolutions':<54} {achieved[-1]:7.1f}", end="")
        print(f"  ({100 * achieved[-1] / matmul[step.dtype]:.0f}% of its matrix product; {flops / 1e9:.1f} GFLOP)")
    print(f"  ours over the plain loop's convolutions {achieved[1] / achieved[0]:.2f}x; ", end="")
    print(f"{_name(ours.dtype)} matrix product over fp32's {matmul[ours.dtype] / matmul[torch.float32]:.2f}x")


def _profiled_seconds(step: Step, steps: int) -> dict[str, float]:
    """Seconds of `steps` steps (after WARMUP) by kind of work, from torch.profiler."""
    for _ in range(WARMUP):
        step()
    with profile(activities=[ProfilerActivity.CPU]) as profiler:
        for _ in range(steps):
            step()
    seconds: dict[str, float] = collections.Counter()
    for event in profiler.key_averages():
        if event.key.startswith("## Call CompiledFxGraph"):
            kind = "compiled elementwise (BN, ReLU, adds)"
        else:
            kind = KINDS.get(event.key, "other")
        seconds[kind] += event.self_cpu_time_total / 1e6
    return seconds


def _convolution_flops(step: Step) -> int:
    """Floating-point operations of one step's convolutions, forward and backward (torch's flop counter, eager)."""
    with (
        FlopCounterMode(display=False) as counter,
        torch.autocast("cpu", dtype=step.dtype, enabled=step.dtype != torch.float32),
    ):
        F.cross_entropy(step.model(step.images).float(), step.labels).backward()
    step.optimizer.zero_grad(set_to_none=True)
    return sum(n for op, n in counter.get_flop_counts()["Global"].items() if "convolution" in str(op))


def _matmul_rate(dtype: torch.dtype, size: int = 2048, repeats: int = 10) -> float:
    """GFLOP/s of a large square matrix product in `dtype`: the best of `repeats` after a warm-up, since what is
    asked is what the cores can do, and a shared machine only ever slows a product down."""
    a, b = torch.randn(size, size).to(dtype), torch.randn(size, size).to(dtype)
    seconds = []
    for _ in range(repeats + 1):
        started = time.perf_counter()
        torch.mm(a, b)
        seconds.append(time.perf_counter() - started)
    return 2 * size**3 / min(seconds[1:]) / 1e9


def _name(dtype: torch.dtype) -> str:
    return str(dtype).removeprefix("torch.")


def host_memory(args: argparse.Namespace, rounds: int = 3) -> None:
    """The channels_last step, eager and compiled, with glibc's defaults and inside `steady_host_memory` (as
    `resnets train` runs it), alternating, so that a shared machine's drift falls on both. After the first round
    "glibc's defaults" are those of a warmed-up process (the settings `steady_host_memory` leaves behind)."""
    print(f"\nhost memory, the channels_last step ({rounds} alternating rounds of {args.steps} steps, medians):")
    for compiled in (False, True):
        step = Step(args, channels_last=True, compiled=compiled)
        for _ in range(WARMUP):
            step()
        seconds: dict[str, list[float]] = collections.defaultdict(list)
        faults: dict[str, list[int]] = collections.defaultdict(list)
        for _ in range(rounds):
            for name in ("glibc's defaults", "steady host memory"):
                with steady_host_memory() if name == "steady host memory" else contextlib.nullcontext():
                    step()  # the first step in new settings settles them
                    for _ in range(args.steps):
                        before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
                        started = time.perf_counter()
                        step()
                        seconds[name].append(time.perf_counter() - started)
                        faults[name].append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
        baseline = statistics.median(seconds["glibc's defaults"])
        for name, spent in seconds.items():
            form = f"{'compiled' if compiled else 'eager'}, {name}"
            rate = len(step.images) / statistics.median(spent)
            print(f"  {form:<30} {rate:8.2f} img/s  {baseline / statistics.median(spent):4.2f}x  ", end="")
            print(f"{statistics.median(faults[name]):9,.0f} page faults a step")


def onednn_layouts(args: argparse.Namespace) -> None:
    """oneDNN's own timing (ONEDNN_VERBOSE must be set before torch starts: one child process per layout), with each
    direction's GFLOP/s from the problem sizes oneDNN logs: a direction slower than the others names its kernel."""
    print("\noneDNN primitives, eager, ms a step (ONEDNN_VERBOSE=1; convolutions by direction and GFLOP/s, reorders):")
    for layout in ("nchw", "channels_last"):
        command = [sys.executable, __file__, "--onednn-child", layout, *_size_flags(args)]
        output = subprocess.run(
            command, env={**os.environ, "ONEDNN_VERBOSE": "1"}, capture_output=True, text=True, check=True
        ).stdout
        spent: dict[str, float] = collections.Counter()
        flops: dict[str, float] = collections.Counter()
        for line in output.split("-- timed --", 1)[1].splitlines():
            fields = line.split(",")
            if len(fields) > 8 and fields[3] == "exec" and fields[5] in ("convolution", "reorder"):
                kind = fields[7] if fields[5] == "convolution" else "reorder"
                spent[kind] += float(fields[-1]) / args.steps
                if fields[5] == "convolution":
                    flops[kind] += _logged_convolution_flops(fields[-2]) / args.steps
        directions = {kind: ms for kind, ms in sorted(spent.items()) if kind != "reorder"}
        print(f"  {layout:<14} convolutions {sum(directions.values()):8.1f}   reorders {spent['reorder']:6.1f}")
        for kind, ms in directions.items():
            print(f"  {'':<14} {kind:<17} {ms:8.1f}   {flops[kind] / ms / 1e6:6.0f} GFLOP/s")


def _logged_convolution_flops(problem: str) -> int:
    """Multiply-adds times two of a convolution as ONEDNN_VERBOSE logs it (mb128_ic16oc16_ih32oh32kh3..._iw32ow32kw3...;
    a grouped one has g32 before ic, and ic and oc count all groups)."""
    size = {key: int(value) for key, value in re.findall(r"([a-z]+?)(\d+)", problem)}
    per_group_inputs = size["ic"] // size.get("g", 1)
    return 2 * size["mb"] * per_group_inputs * size["oc"] * size["oh"] * size["ow"] * size["kh"] * size["kw"]


def onednn_child(args: argparse.Namespace) -> None:
    step = Step(args, channels_last=args.onednn_child == "channels_last", compiled=False)
    for _ in range(WARMUP):
        step()
    print("-- timed --", flush=True)  # oneDNN writes to stdout as well: the parent counts lines after this one
    for _ in range(args.steps):
        step()


def pointwise_as_matmul() -> None:
    """resnet50's 1x1 convolutions (batch 16, 224 pixels) forward and backward, as oneDNN runs them and as
    a matrix product over the channels_last tensor's channels."""
    shapes = [(256, 64, 56), (64, 256, 56), (512, 128, 28), (128, 512, 28)]
    shapes += [(1024, 256, 14), (256, 1024, 14), (2048, 512, 7), (512, 2048, 7)]
    totals = collections.Counter()
    for in_channels, out_channels, pixels in shapes:
        layout = torch.channels_last
        images = torch.randn(16, in_channels, pixels, pixels).contiguous(memory_format=layout).requires_grad_()
        weight = torch.randn(out_channels, in_channels, 1, 1, requires_grad=True)
        upstream = torch.randn(16, out_channels, pixels, pixels).contiguous(memory_format=layout)
        for name, form in (("convolution", F.conv2d), ("matmul", _pointwise_matmul)):
            seconds = []
            for _ in range(WARMUP + 5):
                started = time.perf_counter()
                form(images, weight).backward(upstream)
                seconds.append(time.perf_counter() - started)
            totals[name] += statistics.median(seconds[WARMUP:]) * 1000
    print(
        f"\nresnet50's eight 1x1 shapes, fp32 forward and backward: convolution {totals['convolution']:.0f} ms, ",
        end="",
    )
    print(f"matrix product {totals['matmul']:.0f} ms")


def _pointwise_matmul(images: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """A 1x1 convolution of a channels_last batch as one matrix product over its channels."""
    return F.linear(images.permute(0, 2, 3, 1), weight.flatten(1)).permute(0, 3, 1, 2)


SECTIONS = {
    "forms": step_forms,
    "profile": compiled_profile,
    "rates": convolution_rates,
    "memory": host_memory,
    "onednn": onednn_layouts,
    "pointwise": lambda args: pointwise_as_matmul(),
}


def _size_flags(args: argparse.Namespace) -> list[str]:
    return ["--model", args.model, "--batch", str(args.batch), "--size", str(args.size), "--steps", str(args.steps)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="resnet50")
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--sections", default=",".join(SECTIONS), help="comma-separated, from: " + ", ".join(SECTIONS))
    parser.add_argument("--onednn-child", choices=("nchw", "channels_last"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.onednn_child:
        return onednn_child(args)
    dtype = resolve_precision("auto", torch.device("cpu"))
    print(f"device: {describe_device()}; torch {torch.__version__}; ", end="")
    print(f"{args.model}, batch {args.batch}, {args.size}px, {dtype}")
    chosen = args.sections.split(",")
    if unknown := set(chosen) - SECTIONS.keys():
        parser.error(f"--sections: no section {', '.join(sorted(unknown))} (choose from {', '.join(SECTIONS)})")
    for name in chosen:
        SECTIONS[name](args)


if __name__ == "__main__":
    main()
