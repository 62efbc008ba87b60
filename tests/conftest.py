"""Run the suite as another kind of CPU: `pytest --cpu-kind avx2` (or avx512-bf16, amx) makes `resnets.hardware`
report that kind's flags, so that every choice derived from them (bf16 by default, int8 ranges, the default bench
rows, the OpenVINO precision hint) is the one made there. The kernels still run on the CPU at hand."""

from __future__ import annotations

import pytest

from resnets import hardware


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--cpu-kind",
        choices=["native", *hardware.CPU_KINDS],
        default="native",
        help="simulate the CPU flags of this kind (default: the CPU at hand)",
    )


def pytest_report_header(config: pytest.Config) -> str:
    kind = config.getoption("--cpu-kind")
    suffix = "" if kind == "native" else f" [simulated flags: {kind}]"
    return f"cpu: {hardware.cpu_name()}{suffix}"


@pytest.fixture(autouse=True, scope="session")
def simulated_cpu_kind(request: pytest.FixtureRequest):
    kind = request.config.getoption("--cpu-kind")
    if kind == "native":
        yield kind
        return
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(hardware, "cpu_flags", lambda: hardware.CPU_KINDS[kind])
        yield kind
