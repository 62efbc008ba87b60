"""Run the suite as another kind of CPU: `pytest --cpu-kind avx2` (or avx512-bf16, amx) makes `resnets.hardware`
report that kind's flags, so that every choice derived from them (bf16 by default, int8 ranges, the default bench
rows, the OpenVINO precision hint) is the one made there. The kernels still run on the CPU at hand."""

from __future__ import annotations

import os
import signal

import pytest
import torch

from resnets import hardware

native_cpu_flags = hardware.cpu_flags  # taken before any simulation replaces it


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--cpu-kind",
        choices=["native", *hardware.CPU_KINDS],
        default="native",
        help="simulate the CPU flags of this kind (default: the CPU at hand)",
    )


def pytest_configure(config: pytest.Config) -> None:
    """Under pytest-xdist (`make test` runs two workers), each worker gets its share of the cores: two workers of
    two threads each on two cores would spend their time preempting each other inside every convolution. The child
    processes that tests start (the CLI, DDP ranks) inherit the share through OMP_NUM_THREADS."""
    workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
    if workers > 1:
        share = max(1, len(os.sched_getaffinity(0)) // workers)
        os.environ["OMP_NUM_THREADS"] = str(share)
        torch.set_num_threads(share)


# The files that take longest, in that order: run first, so that under xdist no worker is left alone with one of them
# at the end (collection order is alphabetical, which put tests/test_weights.py, the longest, last).
LONGEST_FILES = ("test_weights.py", "test_train.py", "test_distill.py")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    rank = {name: index for index, name in enumerate(LONGEST_FILES)}
    items.sort(key=lambda item: rank.get(item.path.name, len(LONGEST_FILES)))  # stable: each file keeps its order


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


@pytest.fixture
def cpu_at_hand(monkeypatch: pytest.MonkeyPatch) -> None:
    """Pins `resnets.hardware` to the CPU at hand, for a test whose figure comes from the kernels that really run
    (int8 saturation without VNNI): a simulated kind's choices would be judged on another CPU's kernels."""
    monkeypatch.setattr(hardware, "cpu_flags", native_cpu_flags)


@pytest.fixture(autouse=True)
def default_sigchld():
    """torch's DataLoader leaves a SIGCHLD handler in the suite's process to watch its workers; after many in-process
    loaders, the first test whose own child process ended (the SIGTERM test) died with SIGSEGV in the full suite.
    Tests start with the default handler; a loader inside a test still watches its workers by timeout."""
    signal.signal(signal.SIGCHLD, signal.SIG_DFL)
    yield
