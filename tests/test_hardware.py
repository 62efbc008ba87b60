"""Run-time detection: a cap on torch's instruction sets counts as the CPU it simulates."""

from __future__ import annotations

import os
import resource
from pathlib import Path

import pytest
import torch

from resnets import hardware

AMX = hardware.CPU_KINDS["amx"]


@pytest.mark.parametrize(
    ("environ", "cap"),
    [
        ({}, None),
        ({"ATEN_CPU_CAPABILITY": "avx512"}, None),
        ({"ONEDNN_MAX_CPU_ISA": "AVX512_CORE_AMX"}, None),
        ({"ATEN_CPU_CAPABILITY": "avx2"}, "ATEN_CPU_CAPABILITY=avx2"),
        ({"ATEN_CPU_CAPABILITY": "default"}, "ATEN_CPU_CAPABILITY=default"),
        ({"ONEDNN_MAX_CPU_ISA": "avx2"}, "ONEDNN_MAX_CPU_ISA=AVX2"),
    ],
)
def test_a_cap_below_avx512_hides_avx512_and_amx(environ, cap):
    assert hardware.isa_cap(environ) == cap
    flags = hardware.kernel_flags(AMX, environ)
    if cap is None:
        assert flags == AMX
    else:
        assert flags == hardware.CPU_KINDS["avx2"] | {"avx_vnni"}


def test_a_capped_amx_machine_trains_in_fp32_and_says_why(monkeypatch):
    monkeypatch.setenv("ATEN_CPU_CAPABILITY", "avx2")
    monkeypatch.setattr(hardware, "_cpuinfo_flags", lambda: AMX)
    monkeypatch.setattr(hardware, "cpu_flags", lambda: hardware.kernel_flags(hardware._cpuinfo_flags()))
    assert hardware.resolve_precision("auto", torch.device("cpu")) == torch.float32
    assert hardware.describe_device().endswith("AVX2, BF16 emulated, capped by ATEN_CPU_CAPABILITY=avx2)")
    monkeypatch.delenv("ATEN_CPU_CAPABILITY")
    assert hardware.resolve_precision("auto", torch.device("cpu")) == torch.bfloat16
    assert hardware.describe_device().endswith("AVX-512, native BF16, AMX)")


@pytest.mark.parametrize(
    ("kind", "ending"),
    [
        ("avx2", "AVX2, BF16 emulated)"),
        ("avx512-bf16", "AVX-512, native BF16)"),
        ("amx", "AVX-512, native BF16, AMX)"),
    ],
)
def test_the_device_line_tells_the_cpu_kinds_apart(monkeypatch, kind, ending):
    # Benchmarks print this line: on a VM whose CPU is named only "Intel(R) Xeon(R) Processor" it is what says AMX.
    monkeypatch.delenv("ATEN_CPU_CAPABILITY", raising=False)
    monkeypatch.delenv("ONEDNN_MAX_CPU_ISA", raising=False)
    monkeypatch.setattr(hardware, "cpu_flags", lambda: hardware.CPU_KINDS[kind])
    assert hardware.describe_device().endswith(ending)


@pytest.mark.parametrize(
    "device, message",
    [
        ("gpu", "--device gpu: not a device; choose auto, cpu, cuda or cuda:N"),
        ("cpu:1", "--device cpu:1: not a device"),
        ("cuda:x", "--device cuda:x: not a device"),
    ],
)
def test_a_device_that_is_not_one_is_named(device, message):
    with pytest.raises(ValueError, match=message):
        hardware.resolve_device(device)


def test_cuda_without_a_gpu_or_past_the_last_one_is_named(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(ValueError, match="--device cuda: no CUDA device is available here"):
        hardware.resolve_device("cuda")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    with pytest.raises(ValueError, match=r"--device cuda:1: this machine has 1 CUDA device\(s\)"):
        hardware.resolve_device("cuda:1")
    assert hardware.resolve_device("cuda:0") == torch.device("cuda", 0)
    assert hardware.resolve_device("cpu") == torch.device("cpu")


def _faults_of_a_fresh_64mb_tensor() -> int:
    """Minor page faults of allocating and filling a 64 MB tensor (freed again at once)."""
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    torch.empty(16 * 1024 * 1024).fill_(1.0)
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before


def _resident_mb() -> float:
    return int(Path("/proc/self/statm").read_text().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def test_steady_host_memory_reuses_freed_pages_inside_and_returns_them_after():
    """Two blocks, one inside the other (evaluation inside a training run): the inner one's end changes nothing."""
    start = _resident_mb()
    with hardware.steady_host_memory(environ={}) as changed:
        # The heap grows until it holds them. How long that takes varies from run to run: a 64-byte aligned block
        # needs a little more than its own size, so a freed one is reused only once it has merged with free space
        # beside it, and a small object placed after one keeps it apart. Three in a row without fresh pages say so.
        faults = [_faults_of_a_fresh_64mb_tensor() for _ in range(3)]
        while max(faults[-3:]) >= 1000 and len(faults) < 30:
            faults.append(_faults_of_a_fresh_64mb_tensor())
        with hardware.steady_host_memory(environ={}):
            _faults_of_a_fresh_64mb_tensor()
        steady = sum(_faults_of_a_fresh_64mb_tensor() for _ in range(5))
        held = _resident_mb() - start
    released = _resident_mb() - start
    assert changed == (hardware._glibc() is not None)
    if changed:  # glibc, as on every Linux machine this project runs on: 64 MB is 16,384 pages of 4 KB
        assert steady < 1000, f"{steady} page faults: the freed tensors' pages should be reused, not faulted in"
        assert held >= 60, f"{held:.0f} MB resident: the freed tensors should stay in the process inside the block"
        assert released < held - 48, f"{released:.0f} MB of {held:.0f} still resident after the block"


def test_steady_host_memory_leaves_a_user_tuned_malloc_alone():
    for environ in ({"MALLOC_ARENA_MAX": "2"}, {"GLIBC_TUNABLES": "glibc.malloc.mmap_max=0"}):
        with hardware.steady_host_memory(environ=environ) as changed:
            assert not changed
    with hardware.steady_host_memory(environ={"LD_PRELOAD": "/usr/lib/libjemalloc.so.2"}) as changed:
        assert not changed
    with hardware.steady_host_memory(torch.device("cuda"), environ={}) as changed:
        assert not changed, "a GPU loop's host memory is left to glibc"
