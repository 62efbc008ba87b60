"""The `resnets` command line: output, JSON, errors, and the README table it generates."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from resnets import cli
from resnets.cli import main

README = Path(__file__).resolve().parents[1] / "README.md"


def test_models_lists_and_filters(capsys):
    assert main(["models", "resnext*"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [line.split()[0] for line in lines] == ["resnext101_32x8d", "resnext101_64x4d", "resnext50_32x4d"]


def test_models_json_rows(capsys):
    assert main(["models", "resnet50*", "--json"]) == 0
    rows = {row["name"]: row for row in json.loads(capsys.readouterr().out)}
    assert rows["resnet50"]["params"] == 25_557_032
    assert rows["resnet50"]["gmacs"] == pytest.approx(4.089, abs=1e-3)
    assert rows["resnet50_paper"]["gmacs"] == pytest.approx(3.858, abs=1e-3)


def test_readme_model_table_is_what_the_command_prints(capsys):
    assert main(["models", "--markdown"]) == 0
    generated = capsys.readouterr().out.strip()
    readme = README.read_text()
    embedded = re.search(r"<!-- models:start -->\n(.*?)\n<!-- models:end -->", readme, re.S).group(1).strip()
    assert embedded == generated, "README table is stale: regenerate it with `resnets models --markdown`"


def test_summary_prints_keras_totals(capsys):
    assert main(["summary", "resnet50v2", "--depth", "1"]) == 0
    out = capsys.readouterr().out
    assert "Total params: 25,613,800" in out
    assert "Trainable params: 25,568,360" in out
    assert "Non-trainable params: 45,440" in out


def test_summary_json_with_overrides(capsys):
    assert main(["summary", "resnet20", "--set", "depth=56", "num_classes=100", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["trainable_params"] == 853_018 + 90 * (64 + 1)  # 90 more classes: weights and biases
    assert report["macs"] > 0 and report["activation_bytes"] > 0


@pytest.mark.parametrize(
    "argv, message",
    [
        (["summary", "resnet51"], "unknown model 'resnet51'"),
        (["summary", "resnet20", "--set", "depth=21"], "depth 21 is not 6n+2"),
        (["summary", "resnet20", "--set", "nonsense"], "--set expects key=value"),
        (["models", "nothing*"], "no model matches"),
    ],
)
def test_bad_input_gives_one_line_and_status_2(capsys, argv, message):
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1


def test_help_has_examples(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["summary", "--help"])
    assert exit_info.value.code == 0
    assert "examples:" in capsys.readouterr().out


def test_a_ctrl_c_while_torch_loads_is_one_line(monkeypatch, capsys):
    # The command reaches main() before torch loads (the package's names load on first use), so main can answer it.
    loaded = subprocess.run(
        [sys.executable, "-c", "import sys, resnets.cli; print(sorted(m for m in sys.modules if m == 'torch'))"],
        capture_output=True,
        text=True,
        check=True,
    )
    assert loaded.stdout.strip() == "[]"

    def interrupted():
        raise KeyboardInterrupt

    monkeypatch.setattr(cli, "build_parser", interrupted)
    assert main(["models"]) == 130
    assert capsys.readouterr().err == "resnets: interrupted\n"


@pytest.mark.parametrize(
    ("flags", "fast", "images"),
    [
        (["--fast", "cat.png"], "auto", ["cat.png"]),  # a bare --fast before an image: the automatic choice
        (["--fast", "int8", "cat.png"], "int8", ["cat.png"]),
        (["--fast=fp32", "cat.png"], "fp32", ["cat.png"]),
        (["cat.png", "--fast"], "auto", ["cat.png"]),
    ],
)
def test_predict_fast_reads_a_following_image_as_an_image(monkeypatch, flags, fast, images):
    seen = {}

    def record(args):
        seen.update(fast=args.fast, images=args.images)
        raise cli.CliError("recorded")

    monkeypatch.setattr(cli, "_predictor", record)
    assert main(["predict", "--model", "resnet20", "--pretrained", *flags]) == 2
    assert seen == {"fast": fast, "images": images}


def test_predict_fast_with_a_mistyped_precision_is_refused_by_name(capsys):
    with pytest.raises(SystemExit) as exit_status:
        main(["predict", "--model", "resnet20", "--pretrained", "--fast", "int9", "cat.png"])
    assert exit_status.value.code == 2
    assert "invalid choice: 'int9'" in capsys.readouterr().err
