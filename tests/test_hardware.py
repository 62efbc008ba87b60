"""Run-time detection: a cap on torch's instruction sets counts as the CPU it simulates."""

from __future__ import annotations

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
    assert hardware.describe_device().endswith("AVX-512, native BF16)")


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
