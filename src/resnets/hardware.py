"""What the machine can do, detected at run time: the CPU, its native BF16, the GPU.

Example:
    >>> describe_device()
    'AMD EPYC 9B14 (2 threads, AVX-512, native BF16)'
"""

from __future__ import annotations

import contextlib
import ctypes
import enum
import functools
import os
import platform
import shutil
import sys
import threading
from collections.abc import Iterator, Mapping
from pathlib import Path

import torch


class Precision(str, enum.Enum):
    """The number formats a model runs in; one list for training, inference, bench and the command line.

    Example:
        >>> Precision("bf16").torch_dtype
        torch.bfloat16
    """

    AUTO = "auto"  # every precision this machine runs natively (training: bf16 where native, else fp32)
    FP32 = "fp32"
    BF16 = "bf16"  # native on AVX-512 BF16, AMX and recent GPUs; emulated (~6x slower) on AVX2
    FP16 = "fp16"  # GPUs (with a gradient scaler)
    INT8 = "int8"  # inference only: calibrated post-training quantization

    def __str__(self) -> str:
        return self.value

    @property
    def torch_dtype(self) -> torch.dtype:
        dtypes = {Precision.FP32: torch.float32, Precision.BF16: torch.bfloat16, Precision.FP16: torch.float16}
        if self not in dtypes:
            raise ValueError(f"precision {self.value!r} has no single torch dtype")
        return dtypes[self]


# The CPU kinds this project runs on, by the /proc/cpuinfo flags that decide what resnets does there (tests can
# simulate each: `pytest --cpu-kind avx2`).
CPU_KINDS: dict[str, frozenset[str]] = {
    # AMD Zen3: AVX2 and FMA only; bf16 is emulated, int8 dot products go through 16-bit sums.
    "avx2": frozenset({"avx", "avx2", "fma", "f16c"}),
    # AMD Zen4 / Zen5: AVX-512 with BF16 and VNNI.
    "avx512-bf16": frozenset(
        {"avx", "avx2", "fma", "f16c", "avx512f", "avx512bw", "avx512vl", "avx512_bf16", "avx512_vnni"}
    ),
    # Intel Xeon Sapphire Rapids and later: AVX-512 BF16/FP16/VNNI and AMX tiles for bf16 and int8.
    "amx": frozenset(
        {"avx", "avx2", "fma", "f16c", "avx512f", "avx512bw", "avx512vl", "avx512_bf16", "avx512_vnni"}
        | {"avx512_fp16", "avx_vnni", "amx_tile", "amx_bf16", "amx_int8"}
    ),
}


def cpu_flags() -> frozenset[str]:
    """The CPU's /proc/cpuinfo flags that torch's kernels may use here (see `kernel_flags`)."""
    return kernel_flags(_cpuinfo_flags())


@functools.cache
def _cpuinfo_flags() -> frozenset[str]:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags"):
                return frozenset(line.split(":", 1)[1].split())
    except OSError:
        pass
    return frozenset()


def isa_cap(environ: Mapping[str, str] = os.environ) -> str | None:
    """The setting that keeps torch's kernels below AVX-512 on this CPU, as `NAME=value`, or None: ATen's
    `ATEN_CPU_CAPABILITY=avx2` (or `default`) or oneDNN's `ONEDNN_MAX_CPU_ISA` below AVX512_CORE.

    Example:
        >>> isa_cap({"ATEN_CPU_CAPABILITY": "avx2"})
        'ATEN_CPU_CAPABILITY=avx2'
    """
    aten = environ.get("ATEN_CPU_CAPABILITY", "").lower()
    if aten in ("avx2", "default"):
        return f"ATEN_CPU_CAPABILITY={aten}"
    onednn = environ.get("ONEDNN_MAX_CPU_ISA", "").upper()
    if onednn and not onednn.startswith(("AVX512", "AVX10", "DEFAULT", "ALL")):
        return f"ONEDNN_MAX_CPU_ISA={onednn}"
    return None


def kernel_flags(flags: frozenset[str], environ: Mapping[str, str] = os.environ) -> frozenset[str]:
    """`flags` less AVX-512 and AMX where `isa_cap` keeps the kernels from them: bf16 is then emulated, so the
    choices made from these flags are an AVX2 machine's (and such a machine can be simulated on a newer one).

    Example:
        >>> sorted(kernel_flags(frozenset({"avx2", "avx512_bf16"}), {"ATEN_CPU_CAPABILITY": "avx2"}))
        ['avx2']
    """
    if isa_cap(environ) is None:
        return flags
    return frozenset(flag for flag in flags if not flag.startswith(("avx512", "amx")))


@functools.cache
def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def cpu_has_native_bf16() -> bool:
    """AVX-512 BF16 or AMX: bf16 runs at full speed. Elsewhere (AVX2) it is emulated and several times slower."""
    return bool({"avx512_bf16", "amx_bf16"} & cpu_flags())


def cpu_has_vnni() -> bool:
    """AVX-512 VNNI or AVX-VNNI: int8 dot products without the 16-bit intermediate that can saturate on AVX2."""
    return bool({"avx512_vnni", "avx_vnni"} & cpu_flags())


def can_compile() -> bool:
    """Inductor on CPU generates C++: it needs a compiler on the PATH."""
    return any(shutil.which(name) for name in ("g++", "c++", "clang++"))


def resolve_device(device: str = "auto") -> torch.device:
    """`--device`: auto (a GPU where there is one), cpu, cuda or cuda:N; anything else is one line.

    Example:
        >>> resolve_device("cpu")
        device(type='cpu')
    """
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    kind, _, index = device.partition(":")
    if kind not in ("cpu", "cuda") or (index and (kind == "cpu" or not index.isdigit())):
        raise ValueError(f"--device {device}: not a device; choose auto, cpu, cuda or cuda:N")
    if kind == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"--device {device}: no CUDA device is available here")
    if index and int(index) >= torch.cuda.device_count():
        raise ValueError(f"--device {device}: this machine has {torch.cuda.device_count()} CUDA device(s)")
    return torch.device(device)


def resolve_precision(precision: str, device: torch.device) -> torch.dtype:
    """'auto' -> bf16 where it is native (CUDA with bf16, or a CPU with AVX-512 BF16/AMX), else fp32."""
    trainable = (Precision.AUTO, Precision.FP32, Precision.BF16, Precision.FP16)
    if precision not in trainable:
        raise ValueError(f"precision {precision!r} is not one of {', '.join(map(str, trainable))}")
    if precision != Precision.AUTO:
        return Precision(precision).torch_dtype
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return torch.bfloat16 if cpu_has_native_bf16() else torch.float32


def describe_device(device: torch.device | None = None) -> str:
    device = device or torch.device("cpu")
    if device.type == "cuda":
        return f"{torch.cuda.get_device_name(device)} (CUDA)"
    simd = "AVX-512" if "avx512f" in cpu_flags() else "AVX2" if "avx2" in cpu_flags() else "no AVX2"
    bf16 = "native BF16" if cpu_has_native_bf16() else "BF16 emulated"
    # A VM often names an AMX Xeon only "Intel(R) Xeon(R) Processor": the tiles are what set its speeds apart.
    amx = ", AMX" if "amx_bf16" in cpu_flags() else ""
    threads = torch.get_num_threads()
    cap = f", capped by {isa_cap()}" if isa_cap() else ""
    return f"{cpu_name()} ({threads} thread{'s' if threads != 1 else ''}, {simd}, {bf16}{amx}{cap})"


# glibc's mallopt parameters (malloc.h) and the values a process settles on once its dynamic threshold has grown
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD, _M_MMAP_MAX = -1, -3, -4
_SETTLED_MMAP_THRESHOLD = 32 * 1024 * 1024  # glibc's ceiling for the dynamic threshold on 64-bit
_DEFAULT_MMAP_MAX = 65536


@functools.cache
def _glibc() -> ctypes.CDLL | None:
    if not sys.platform.startswith("linux") or platform.libc_ver()[0] != "glibc":
        return None
    try:
        return ctypes.CDLL("libc.so.6")
    except OSError:
        return None


_steady_blocks = 0  # steady_host_memory blocks open now: the outermost sets glibc up and restores it
_steady_lock = threading.Lock()


@contextlib.contextmanager
def steady_host_memory(device: torch.device | None = None, environ: Mapping[str, str] = os.environ) -> Iterator[bool]:
    """Keep freed host memory in the process for the next batch of a CPU loop, and hand it back afterwards.

    glibc gives each large tensor pages of its own (mmap) and returns them when the tensor dies, so an eager CPU step
    faults much of its activations in again, page by page, every batch. Inside this block large blocks come from the
    heap and stay there. A compiled training step reuses its buffers already and gains nothing; an eager one gains a
    few per cent (`python benchmarks/train_step_profile.py`, its host memory section), large-batch inference more.
    On leaving the outermost block, glibc's settings return to those of a warmed-up process and the spare memory
    goes back to the system. Yields whether it changed anything: not for a GPU `device`, not on other C libraries,
    nor when the user tunes malloc already (MALLOC_* or GLIBC_TUNABLES in the environment, another allocator
    preloaded).

    Example:
        >>> with steady_host_memory(torch.device("cpu")):
        ...     evaluate(model, batches, torch.device("cpu"))
    """
    global _steady_blocks
    libc = _glibc()
    user_tuned = any(key.startswith("MALLOC_") or key == "GLIBC_TUNABLES" for key in environ)
    preloaded = any(name in environ.get("LD_PRELOAD", "") for name in ("jemalloc", "tcmalloc", "mimalloc"))
    on_gpu = device is not None and device.type != "cpu"
    if libc is None or user_tuned or preloaded or on_gpu:
        yield False
        return
    with _steady_lock:
        _steady_blocks += 1
        if _steady_blocks == 1:
            libc.mallopt(_M_MMAP_MAX, 0)
            libc.mallopt(_M_TRIM_THRESHOLD, 2**31 - 1)
    try:
        yield True
    finally:
        with _steady_lock:
            _steady_blocks -= 1
            if _steady_blocks == 0:
                libc.mallopt(_M_MMAP_MAX, _DEFAULT_MMAP_MAX)
                libc.mallopt(_M_MMAP_THRESHOLD, _SETTLED_MMAP_THRESHOLD)
                libc.mallopt(_M_TRIM_THRESHOLD, 2 * _SETTLED_MMAP_THRESHOLD)
                libc.malloc_trim(0)
