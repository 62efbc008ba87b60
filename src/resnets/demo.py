"""`make demo`: the main job on the embedded CIFAR-10 sample, in a few minutes on 2 CPU cores.

Trains resnet20 with the cifar-fast recipe on the 1,000-image sample that ships in `data/`, evaluates it on
the held-out 100, plots its curves, predicts a few images, and prints the model's summary. The same commands
run on the full set (see README).

Example:
    $ python -m resnets.demo [--epochs 15] [--out runs/demo]
"""

from __future__ import annotations

import argparse
import tarfile
import tempfile
from pathlib import Path

from resnets.cli import main as cli
from resnets.data import SAMPLE_ARCHIVE


def run(*argv: str) -> None:
    print(f"\n$ resnets {' '.join(argv)}", flush=True)
    status = cli(list(argv))
    if status:
        raise SystemExit(status)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=15)
    parser.add_argument("--out", default="runs/demo")
    args = parser.parse_args()
    out = Path(args.out)
    run("models", "resnet*v2")
    run("summary", "resnet20", "--depth", "1")
    run(
        "train",
        "--model",
        "resnet20",
        "--data",
        str(SAMPLE_ARCHIVE),
        "--recipe",
        "cifar-fast",
        "--out",
        str(out),
        "--epochs",
        str(args.epochs),
        "--batch-size",
        "32",
        "--lr",
        "0.05",
        "--warmup-iterations",
        "30",
        "--no-progress",
        "--log-every",
        "0",
        "--overwrite",  # the demo starts afresh each time, replacing only its own run's files
    )
    weights = str(out / "model.safetensors")
    run("eval", "--model", "resnet20", "--weights", weights, "--data", str(SAMPLE_ARCHIVE), "--split", "val", "--flip")
    run("plot", str(out))
    with tempfile.TemporaryDirectory() as folder, tarfile.open(SAMPLE_ARCHIVE) as archive:
        names = [m.name for m in archive.getmembers() if m.isfile()][::250]
        for name in names:
            archive.extract(name, folder, filter="data")
        images = [f"{folder}/{n}" for n in names]
        run("predict", "--model", "resnet20", "--weights", weights, "--topk", "3", *images)
        print("\nThe same images with the shipped weights (150 epochs on 45,000 images):")
        run("predict", "--model", "resnet20", "--pretrained", "--topk", "3", *images)
    print(f"\nThe run is in {out}/: config.json, metrics.jsonl, checkpoint.pt, model.safetensors, curves.png")


if __name__ == "__main__":
    main()
