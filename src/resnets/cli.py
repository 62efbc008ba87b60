"""The `resnets` command: thin subcommands, each calling one library function.

Example:
    $ resnets models "resnet*" --json
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

if TYPE_CHECKING:
    from resnets.train.recipes import Recipe

from resnets.atomic import check_figure_path
from resnets.errors import RESET_CLASSIFIER_HINT, SKIP_HINT, ResnetsError, first_line

EXAMPLES = {
    "models": """examples:
  resnets models                      every registered network
  resnets models 'resnext*' --json    the ResNeXt entries, as JSON
  resnets models --markdown           the README's model table (parameters, multiply-adds)""",
    "summary": """examples:
  resnets summary resnet50v2          Keras-style totals (25,613,800 parameters)
  resnets summary resnet20 --depth 3  down to the blocks' layers
  resnets summary resnet50 --input-size 3 160 160 --json""",
    "convert": """examples:
  resnets convert resnet50-0676ba61.pth resnet50.safetensors --model resnet50
  resnets convert ResNet50V2.h5 resnet50v2.safetensors --model resnet50v2
  resnets convert caffe_resnet101.pdparams resnet101.safetensors --model resnet101_paper
  resnets convert runs/r56/checkpoint.pt r56-epoch120.safetensors   # a run's checkpoint, with its classes
formats: PyTorch .pth/.pt (bare state_dict or training checkpoint), .safetensors, Keras .h5/.keras,
Paddle .pdparams (paddle.vision names or Caffe-style names as in the original release)""",
    "train": """examples:
  resnets train --model resnet20 --data ../shared/data/cifar10-train-jpg.tar.gz --recipe cifar-fast --out runs/r20
  resnets train --model resnet110 --data cifar-10-batches-py --recipe cifar-paper --out runs/r110
  resnets train --model resnet20 --data DIR --recipe cifar-fast --out runs/r20 --epochs 5 --lr 0.05
  resnets train ... --out runs/r20 --resume          continue a stopped run exactly
  torchrun --nproc-per-node 2 -m resnets.cli train ...  data-parallel (gloo on CPU, nccl on CUDA)""",
    "eval": """examples:
  resnets eval --model resnet20 --pretrained --data cifar10-test/ --json
  resnets eval --model resnet20 --weights runs/r20/model.safetensors --data cifar10-train-jpg.tar.gz --split val
  resnets eval --weights runs/r56 --data cifar10-train-jpg.tar.gz --split val   # the run's net; mid-run: its checkpoint
  resnets eval --model resnet32,resnet44,resnet56 --pretrained --data DIR   # several shipped nets: their mean logits
splits: auto (the data's val/test part, else all of it), val (the fixed stratified hold-out used in training), all""",
    "predict": """examples:
  resnets predict --model resnet20 --pretrained cat.png dog.jpg --topk 3
  resnets predict --model resnet20 --weights runs/r20/model.safetensors images/*.png --json
  resnets predict --weights runs/r20 photos/        # every image in the folder and its subfolders""",
    "plot": """examples:
  resnets plot runs/r20                  writes runs/r20/curves.png
  resnets plot runs/r20 --out curves.png""",
    "bench": """examples:
  resnets bench resnet50 --batch-size 16 --mode both --peers torchvision,timm,onnxruntime
  resnets bench resnet20 resnet56 --batch-size 128 --mode train --iters 20 --json
  resnets bench resnet50 --dtype bf16 --peers torchvision     (bf16 is fast only where the CPU has it natively)
  resnets bench --sweep depth --mode infer --iters 10 --plot depth.png          (ImageNet nets, 18 to 152 layers)
  resnets bench resnet20 --sweep depth --batch-size 64 --plot cifar-depth.png   (CIFAR nets, 20 to 1202 layers)""",
    "reproduce": """examples:
  resnets reproduce degradation --data cifar10-train-jpg.tar.gz --out docs/results
  resnets reproduce depth --data cifar10-train-jpg.tar.gz --budget paper --device cuda
  resnets reproduce v2-activations --data cifar10-train-jpg.tar.gz --iterations 2000
  resnets reproduce depth --data cifar10-train-jpg.tar.gz --budget medium --seeds 3
runs are shared between experiments and resumed: rerun the same command after a stop to go on""",
    "export": """examples:
  resnets export --model resnet20 --weights runs/r20/model.safetensors --format onnx --out resnet20.onnx
  resnets export --model resnet20 --pretrained --format torchscript --out resnet20.ts
  resnets export --model resnet50 --weights resnet50.pth --format exported --out resnet50.pt2
  resnets export --model resnet20 --pretrained --format openvino --dtype int8 --out resnet20-int8.xml
each export is reloaded and compared with the eager model on real images (max abs difference, top-1 agreement)""",
}


class CliError(Exception):
    """A user-facing error: printed as one line, exit status 2."""


def _count(minimum: int) -> Callable[[str], int]:
    """An argparse type: an integer of at least `minimum`, refused by argparse (one line, exit 2) otherwise."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"{value} is below {minimum}")
        return value

    parse.__name__ = f"integer >= {minimum}"
    return parse


def _parse_overrides(pairs: Sequence[str]) -> dict[str, Any]:
    """`key=value` pairs; values parsed as JSON where they can be (numbers, booleans, lists)."""
    overrides = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep:
            raise CliError(f"--set expects key=value, got {pair!r}")
        try:
            overrides[key] = json.loads(value)
        except json.JSONDecodeError:
            overrides[key] = value
    return overrides


def cmd_models(args: argparse.Namespace) -> None:
    from resnets.bench.profile import profile
    from resnets.models import get_entry, list_models

    names = list_models(args.pattern)
    if not names and args.pattern and not any(c in args.pattern for c in "*?["):
        get_entry(args.pattern)  # a name, not a pattern: the registry's own error suggests the names it resembles
    if not names:
        raise CliError(f"no model matches {args.pattern!r}")
    if not (args.json or args.markdown):
        for name in names:
            entry = get_entry(name)
            print(f"{name:<22} {entry.family:<9} {entry.config.depth:>5} layers  {entry.source}")
        return
    rows = []
    for name in names:
        entry, stats = get_entry(name), profile(name)
        rows.append(
            dict(
                name=name,
                family=entry.family,
                depth=entry.config.depth,
                input_size=list(entry.input_size),
                params=stats.trainable,
                gmacs=round(stats.macs / 1e9, 3),
                source=entry.source,
            )
        )
    if args.json:
        print(json.dumps(rows, indent=2))
        return
    print("| model | layers | input | params | GMACs | source |")
    print("|---|---:|---|---:|---:|---|")
    for row in rows:
        size = "x".join(str(s) for s in row["input_size"][1:])
        print(
            f"| `{row['name']}` | {row['depth']} | {size} | {row['params']:,} | {row['gmacs']:.3f} | {row['source']} |"
        )


def cmd_summary(args: argparse.Namespace) -> None:
    from resnets.bench.summary import summarize

    report = summarize(args.model, input_size=args.input_size, table_depth=args.depth, **_parse_overrides(args.set))
    print(json.dumps(report.to_dict(), indent=2) if args.json else report.text)


def cmd_convert(args: argparse.Namespace) -> None:
    from resnets.train.run_folder import weights_source
    from resnets.weights import convert
    from resnets.weights.pretrained import load_trained

    # A run of ours (its folder, or its checkpoint.pt) records its net, settings, classes and normalization: the
    # converted file keeps them, as the run's own weights file would.
    source, recorded = weights_source(Path(args.source))
    if recorded is None and not args.model:
        _, recorded = load_trained(source)  # a file of ours names its net; any other gets "name it: --model NAME"
    model = args.model or recorded.model
    overrides = _parse_overrides(args.set)
    if recorded:
        overrides = {"num_classes": len(recorded.classes), **recorded.model_overrides, **overrides}
    metadata = recorded.to_strings() if recorded else None
    destination = convert(source, args.destination, model, metadata=metadata, **overrides)
    if args.json:
        print(json.dumps({"model": model, "source": str(args.source), "destination": str(destination)}))
    else:
        print(f"wrote {destination} ({model}, from {args.source})")


def _add_recipe_flags(parser: argparse.ArgumentParser) -> None:
    """One flag per Recipe field, typed from its default (an enum's members are its choices); unset flags keep the
    recipe's value."""
    import dataclasses

    from resnets.train.recipes import FIELD_CHOICES, Recipe, field_help

    group = parser.add_argument_group("recipe overrides (each Recipe field; unset, the recipe's value)")
    helps = field_help()
    for field in dataclasses.fields(Recipe):
        if field.name == "name":
            continue
        flag = "--" + field.name.replace("_", "-")
        default, text = field.default, helps.get(field.name)
        if isinstance(default, bool) or field.type == "bool | None":
            group.add_argument(flag, action=argparse.BooleanOptionalAction, default=None, help=text)
        elif isinstance(default, tuple):
            group.add_argument(flag, nargs="*", type=float, default=None, help=text)
        elif field.name in FIELD_CHOICES:
            choices = [str(member) for member in FIELD_CHOICES[field.name]]
            group.add_argument(flag, choices=choices, default=None, help=text)
        else:
            metavar = type(default).__name__.upper()
            group.add_argument(flag, type=type(default), default=None, metavar=metavar, help=text)


def recipe_from_args(args: argparse.Namespace) -> Recipe:
    """The recipe `resnets train` parsed arguments ask for: the named recipe with each flag given."""
    import dataclasses

    from resnets.train import get_recipe
    from resnets.train.recipes import Recipe

    fields = [f.name for f in dataclasses.fields(Recipe) if f.name != "name"]
    overrides = {name: getattr(args, name) for name in fields if getattr(args, name) is not None}
    if "milestones" in overrides:
        overrides["milestones"] = tuple(overrides["milestones"])
    return get_recipe(args.recipe, **overrides)


def cmd_train(args: argparse.Namespace) -> int:
    from resnets.train import train

    if args.resume and args.overwrite:
        raise CliError("--resume continues the run in --out and --overwrite replaces it: give one of them")
    model_overrides = _parse_overrides(args.set)
    if "num_classes" in model_overrides:
        raise CliError("--set num_classes: a trained model has as many classes as the data's class folders")
    recipe = recipe_from_args(args)
    result = train(
        args.model,
        args.data,
        args.out,
        recipe,
        model_overrides=model_overrides,
        resume=args.resume,
        device=args.device,
        cache_dir=args.cache_dir,
        skip_bad_images=args.skip_bad_images,
        stop_after_steps=args.stop_after_steps,
        progress=not args.no_progress,
        overwrite=args.overwrite,
    )
    if args.json:
        print(json.dumps(result.to_json()))
    return 128 + result.signal if result.signal else 0


def _predictor(args: argparse.Namespace, batch_size: int | None = None):
    """The predictor the command names; with --fast, its runtime timed on `batch_size` (default: predict's)."""
    from resnets.deploy.predict import PREDICT_BATCH, Predictor

    predictor = Predictor.load(args.model, weights=args.weights, pretrained=args.pretrained)
    if getattr(args, "fast", None):
        path = predictor.optimize(args.fast, batch_size=batch_size or PREDICT_BATCH)
        print(f"optimized path: {path}", file=sys.stderr)
    return predictor


def cmd_eval(args: argparse.Namespace) -> None:
    from resnets.deploy.predict import EVAL_BATCH

    metrics = _predictor(args, EVAL_BATCH).evaluate_data(
        args.data, split=args.split, flip=args.flip, skip_bad_images=args.skip_bad_images, cache_dir=args.cache_dir
    )
    if args.json:
        print(json.dumps(metrics))
    else:
        top1, top5, loss, count = metrics["top1"], metrics["top5"], metrics["loss"], metrics["n"]
        print(f"top-1 {top1:.4f}  top-5 {top5:.4f}  loss {loss:.4f}  ({count} images)")


def cmd_predict(args: argparse.Namespace) -> int:
    results = _predictor(args).predict_files(args.images, topk=args.topk)
    if args.json:
        print(json.dumps(results, indent=2))
    for result in results:
        if "error" in result:
            print(f"resnets predict: error: {result['error']}", file=sys.stderr)
        elif not args.json:
            tops = ", ".join(f"{t['class']} {t['probability']:.3f}" for t in result["top"])
            print(f"{result['file']}: {tops}")
    failed = sum("error" in r for r in results)
    # none classified is bad input (2), as for every command; some of them, a partial answer (1)
    return 0 if not failed else 2 if failed == len(results) else 1


def cmd_plot(args: argparse.Namespace) -> None:
    from resnets.train.plots import plot_run

    if args.out:
        check_figure_path(args.out, "--out")
    print(f"wrote {plot_run(args.run_dir, args.out)}")


def cmd_status(args: argparse.Namespace) -> int:
    from resnets.train.run_folder import RunFolder, RunFolderError

    failed = 0
    for run_dir in args.run_dirs:  # every folder is reported; a bad one does not hide those after it
        try:
            if not Path(run_dir).is_dir():
                raise CliError(f"{run_dir}: {'a file, not a' if Path(run_dir).is_file() else 'no such'} run folder")
            print(f"{run_dir}: {RunFolder(run_dir).status()}")
        except (CliError, RunFolderError) as error:
            print(f"resnets status: error: {error}", file=sys.stderr)
            failed += 1
    return 2 if failed else 0


def cmd_bench(args: argparse.Namespace) -> None:
    import dataclasses

    from resnets.bench.timing import benchmark, format_rows, sweep_models
    from resnets.hardware import cpu_has_native_bf16, describe_device, resolve_device
    from resnets.models import get_entry

    models = sweep_models(args.sweep, args.models) if args.sweep else args.models
    if not models:
        raise CliError("name at least one model (or use --sweep depth)")
    for name in models:
        get_entry(name)  # an unknown name (with a did-you-mean) before the device line and any timing
    if args.plot:
        check_figure_path(args.plot, "--plot")  # before the minutes of timing, not after them
    if args.mode == "train" and args.dtype and set(args.dtype) <= {"int8"}:
        raise CliError("--dtype int8 runs inference only; --mode train takes fp32, bf16 or fp16")
    batch_sizes = args.batch_size or ([1, 2, 4, 8, 16, 32, 64] if args.sweep == "batch" else [16])
    device = resolve_device(args.device)
    if "bf16" in (args.dtype or []) and device.type == "cpu" and not cpu_has_native_bf16():
        print("note: this CPU has no native BF16 (no AVX-512 BF16 or AMX): bf16 is emulated here and slower than fp32")
    if not args.json:
        print(f"device: {describe_device(device)}; warm-up {args.warmup}, timed {args.iters} steps per engine")
    peers = None if args.peers is None else [p for p in args.peers.split(",") if p and p != "none"]
    rows = benchmark(
        models,
        batch_sizes=batch_sizes,
        mode=args.mode,
        dtypes=args.dtype,
        channels_last=args.channels_last,
        compile_model=args.compile,
        device=args.device,
        peers=peers,
        warmup=args.warmup,
        iters=args.iters,
        engine=args.engine,
    )
    print(json.dumps([dataclasses.asdict(r) for r in rows], indent=2) if args.json else format_rows(rows))
    if args.plot:
        from resnets.bench.timing import plot_rows

        print(f"wrote {plot_rows(rows, args.plot, by='batch_size' if args.sweep == 'batch' else 'model')}")


def cmd_export(args: argparse.Namespace) -> None:
    from resnets.deploy.export import export_model

    report = export_model(_predictor(args), args.format, args.out, data=args.data, dtype=args.dtype)
    if args.json:
        print(json.dumps(report))
    else:
        pair = f" and {Path(report['out']).with_suffix('.bin')}" if args.format == "openvino" else ""
        print(
            f"wrote {report['out']}{pair} ({report['format']}, {report['dtype']}); on {report['images']} real images: "
            f"max abs difference {report['max_abs_diff']:.2e}, top-1 agreement {report['top1_agreement']:.1%}"
        )


def cmd_reproduce(args: argparse.Namespace) -> None:
    from resnets.reproduce import reproduce, status

    if args.status:
        plan = dict(out=args.out, budget=args.budget, iterations=args.iterations, runs_dir=args.runs, seeds=args.seeds)
        print("\n".join(status(args.experiment, **plan)))
        return
    if args.data is None:
        raise CliError("--data is required (only --status runs without it)")
    path = reproduce(
        args.experiment,
        args.data,
        out=args.out,
        budget=args.budget,
        iterations=args.iterations,
        runs_dir=args.runs,
        seeds=args.seeds,
        device=args.device,
        cache_dir=args.cache_dir,
    )
    print(f"wrote {path}")


CACHE_DIR = str(Path.home() / ".cache" / "resnets")


def _models_flags(command: argparse.ArgumentParser) -> None:
    command.add_argument("pattern", nargs="?", default="*", help="shell-style name pattern (default: all)")
    fmt = command.add_mutually_exclusive_group()
    fmt.add_argument("--json", action="store_true", help="JSON rows with parameters and multiply-adds")
    fmt.add_argument("--markdown", action="store_true", help="a Markdown table with parameters and multiply-adds")


def _summary_flags(command: argparse.ArgumentParser) -> None:
    command.add_argument("model")
    command.add_argument("--input-size", nargs=3, type=_count(1), metavar=("C", "H", "W"))
    command.add_argument("--depth", type=_count(0), default=2, help="nesting depth of the table (default: 2)")
    command.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE", help="config overrides")
    command.add_argument("--json", action="store_true")


def _convert_flags(command: argparse.ArgumentParser) -> None:
    command.add_argument("source", help="weight file: .pth .pt .safetensors .h5 .keras .pdparams")
    command.add_argument("destination", help="the .safetensors file to write (atomically)")
    command.add_argument(
        "--model", help="registered model the weights are for (default for a run of ours: the net it trained)"
    )
    command.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE", help="config overrides (num_classes=10)")
    command.add_argument("--json", action="store_true")


def _train_flags(command: argparse.ArgumentParser) -> None:
    from resnets.train.recipes import RECIPES

    command.add_argument("--model", required=True)
    command.add_argument("--data", required=True, help="ImageFolder dir, .tar.gz of one, or CIFAR pickle dir")
    command.add_argument("--recipe", default="cifar-fast", choices=list(RECIPES), help="the recipe to start from")
    command.add_argument("--out", required=True, help="run directory (config, metrics, checkpoints, weights)")
    command.add_argument("--resume", action="store_true", help="continue the run in --out exactly where it stopped")
    command.add_argument(
        "--overwrite", action="store_true", help="replace the run in --out (its own files only; others are kept)"
    )
    command.add_argument("--device", default="auto", help="auto | cpu | cuda")
    command.add_argument("--cache-dir", default=CACHE_DIR, help="decoded-image cache")
    command.add_argument("--skip-bad-images", action="store_true", help="skip and count unreadable images")
    command.add_argument("--stop-after-steps", type=_count(1), help="checkpoint and stop after this many steps")
    command.add_argument("--no-progress", action="store_true", help="log lines instead of a progress bar")
    command.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE", help="model config overrides")
    command.add_argument("--json", action="store_true", help="print the final metrics as JSON")
    _add_recipe_flags(command)


def _trained_weights_flags(command: argparse.ArgumentParser) -> None:
    """Which trained net to run: eval, predict and export share these."""
    command.add_argument(
        "--model",
        help="registered net (default with --weights: the net the file or run folder names); with --pretrained, "
        "several comma-separated answer as one (eval, predict): the mean of their logits",
    )
    source = command.add_mutually_exclusive_group(required=True)
    source.add_argument(
        "--weights", help="weight file (any supported format), or a run folder (its weights or latest checkpoint)"
    )
    source.add_argument("--pretrained", action="store_true", help="the weights shipped with resnets")
    command.add_argument("--json", action="store_true")


def _fast_choices() -> list[str]:
    from resnets.hardware import Precision
    from resnets.inference.optimize import PRECISIONS

    return [str(p) for p in (Precision.AUTO, *PRECISIONS)]


def _fast_flag(command: argparse.ArgumentParser) -> None:
    command.add_argument(
        "--fast",
        nargs="?",
        const="auto",
        choices=_fast_choices(),
        help="the optimized path (folded BN, inductor, int8 or bf16); auto keeps the fastest that agrees with "
        "fp32 on >= 98%% of calibration images",
    )


def _eval_flags(command: argparse.ArgumentParser) -> None:
    _trained_weights_flags(command)
    command.add_argument("--data", required=True)
    command.add_argument("--split", default="auto", choices=["auto", "val", "all"])
    command.add_argument("--flip", action="store_true", help="average over a horizontal flip")
    command.add_argument(
        "--skip-bad-images", action="store_true", help="leave out unreadable images (each is named), and go on"
    )
    command.add_argument("--cache-dir", default=CACHE_DIR, help="decoded-image cache (shared with train)")
    _fast_flag(command)


def _predict_flags(command: argparse.ArgumentParser) -> None:
    _trained_weights_flags(command)
    _fast_flag(command)
    command.add_argument("images", nargs="+", help="image files, or folders of them (searched recursively)")
    command.add_argument("--topk", type=_count(1), default=5)


def _export_flags(command: argparse.ArgumentParser) -> None:
    from resnets.deploy.export import FORMATS

    _trained_weights_flags(command)
    command.add_argument("--format", required=True, choices=list(FORMATS))
    command.add_argument("--out", required=True)
    command.add_argument(
        "--dtype", default="fp32", choices=["fp32", "int8"], help="int8: a calibrated QDQ graph (onnx, openvino)"
    )
    command.add_argument("--data", help="images for the check (default: the embedded CIFAR-10 sample)")


def _bench_flags(command: argparse.ArgumentParser) -> None:
    from resnets.bench.timing import Mode
    from resnets.hardware import Precision
    from resnets.inference.optimize import Runtime

    command.add_argument("models", nargs="*")
    command.add_argument("--batch-size", type=_count(1), nargs="+")
    command.add_argument("--mode", default="both", choices=[str(m) for m in Mode])
    command.add_argument(
        "--dtype",
        nargs="+",
        choices=[str(p) for p in Precision if p != Precision.AUTO],
        help="our precisions (default: each one this machine runs natively: fp32, int8 to infer, bf16 where native)",
    )
    command.add_argument("--channels-last", action=argparse.BooleanOptionalAction, default=True)
    command.add_argument(
        "--compile",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="inductor for our model (default: on for inference, where it pays; off for training)",
    )
    command.add_argument(
        "--engine",
        default="auto",
        choices=[str(r) for r in Runtime],
        help="runtime for our inference rows (auto: the fastest of those that run each precision, timed first)",
    )
    command.add_argument("--device", default="cpu", help="cpu | cuda")
    command.add_argument(
        "--peers",
        help="comma-separated: torchvision,timm,onnxruntime,openvino, or none "
        "(default: those of torchvision, onnxruntime and openvino that are installed)",
    )
    command.add_argument("--warmup", type=_count(0), default=10)
    command.add_argument("--iters", type=_count(1), default=100)
    command.add_argument(
        "--sweep", choices=["depth", "batch"], help="a scaling view over depth (the named model's family) or batch size"
    )
    command.add_argument("--plot", help="PNG of img/s and achieved GFLOP/s")
    command.add_argument("--json", action="store_true")


def _reproduce_flags(command: argparse.ArgumentParser) -> None:
    from resnets.reproduce.runner import BUDGETS

    command.add_argument("experiment", choices=["degradation", "depth", "v2-shortcuts", "v2-activations"])
    command.add_argument("--data", help="CIFAR-10 as an ImageFolder dir, .tar.gz of one, or pickles")
    command.add_argument(
        "--status", action="store_true", help="say where each run stands (step, validation, hardware); train nothing"
    )
    command.add_argument(
        "--budget",
        default="fast",
        choices=list(BUDGETS),
        help="fast: minutes per net on a 2-core CPU; medium: 12k steps, hours per net; paper: 64k steps; zoo: the "
        "shipped weights' recipe (cifar-fast, Cutout 16, 180 epochs)",
    )
    command.add_argument("--iterations", type=_count(1), help="steps per net instead of the budget's")
    command.add_argument("--out", default="results", help="OUT/<experiment>/results.md and OUT/<experiment>.png")
    command.add_argument("--runs", help="where the runs live, shared between experiments (default OUT/runs)")
    command.add_argument(
        "--seeds",
        type=_count(1),
        default=1,
        help="runs per net, from seeds 0, 1, ...; the tables give their mean and its standard error (seed 0's run "
        "is the one a 1-seed report used)",
    )
    command.add_argument("--device", default="auto", help="auto | cpu | cuda")
    command.add_argument("--cache-dir", default=CACHE_DIR, help="decoded-image cache")


def _plot_flags(command: argparse.ArgumentParser) -> None:
    command.add_argument("run_dir")
    command.add_argument("--out", help="PNG path (default RUN_DIR/curves.png)")


def _status_flags(command: argparse.ArgumentParser) -> None:
    command.add_argument("run_dirs", nargs="+", metavar="RUN_DIR")


# name: (what it runs, its one-line help, its flags), in the order `resnets --help` lists them
COMMANDS: dict[str, tuple[Callable, str, Callable[[argparse.ArgumentParser], None]]] = {
    "models": (cmd_models, "list the registered networks", _models_flags),
    "summary": (cmd_summary, "layer table and totals of one network (Keras's counting)", _summary_flags),
    "convert": (cmd_convert, "convert weights of any supported format to .safetensors", _convert_flags),
    "train": (cmd_train, "train a network on an image folder, archive or CIFAR pickles", _train_flags),
    "eval": (cmd_eval, "top-1/top-5 accuracy of trained weights on a dataset", _eval_flags),
    "predict": (cmd_predict, "classify image files", _predict_flags),
    "export": (cmd_export, "export to ONNX, TorchScript or torch.export, checked against eager", _export_flags),
    "bench": (cmd_bench, "time forward and training steps, beside peer engines (seed 002)", _bench_flags),
    "reproduce": (
        cmd_reproduce,
        "rerun a paper experiment on CIFAR-10: results.md, figures, metrics",
        _reproduce_flags,
    ),
    "plot": (cmd_plot, "loss, error and learning-rate curves of a run, as PNG", _plot_flags),
    "status": (
        cmd_status,
        "where runs stand: step, epoch, last validation figure, hardware; one line each",
        _status_flags,
    ),
}


class OneLineParser(argparse.ArgumentParser):
    """argparse's refusals as one line, like every other error of the command: a mistyped choice is not buried
    under a usage block of thirty lines; `--help` shows that block on request."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    """The `resnets` command's parser: one subcommand per COMMANDS entry, each with its examples as epilog."""
    parser = OneLineParser(prog="resnets", description="The ResNet family on PyTorch.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND", parser_class=OneLineParser)
    for name, (func, text, add_flags) in COMMANDS.items():
        command = sub.add_parser(
            name,
            help=text,
            description=text,
            epilog=EXAMPLES.get(name),
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        command.set_defaults(func=func)
        add_flags(command)
    return parser


# The library's errors name the Python arguments that mend them; on the command line the same hint names the flag.
API_HINTS = {
    "model=NAME": "--model NAME",
    "weights=PATH": "--weights PATH",
    "pretrained=True": "--pretrained",
    "skip_bad_images=True": "--skip-bad-images",
}


def _as_flags(message: str, args: argparse.Namespace) -> str:
    if not hasattr(args, "skip_bad_images"):  # a hint at a flag this command lacks would only mislead
        message = message.replace(f" ({SKIP_HINT})", "")
    message = message.replace(f"; {RESET_CLASSIFIER_HINT}", "")  # an argument of the API only
    for argument, flag in API_HINTS.items():
        message = message.replace(argument, flag)
    return message


def _fast_without_value(argv: list[str]) -> list[str]:
    """`predict --fast cat.png` means the automatic choice for cat.png: argparse would read the image as the
    precision (`--fast` takes an optional value) and refuse it, so the value is written out where a path follows
    (a mistyped precision, `--fast int9`, is still refused by name)."""
    precisions = set(_fast_choices())
    out: list[str] = []
    for index, token in enumerate(argv):
        out.append(token)
        following = argv[index + 1] if index + 1 < len(argv) else None
        if token == "--fast" and following is not None and following not in precisions and _looks_like_path(following):
            out.append("auto")  # the flag's const
        if token == "--":
            out.extend(argv[index + 1 :])
            break
    return out


def _looks_like_path(token: str) -> bool:
    return not token.startswith("-") and ("." in token or os.sep in token or Path(token).exists())


def main(argv: Sequence[str] | None = None) -> int:
    """Run the `resnets` command; returns the exit status."""
    # A library's warning is one line of ours, not a stack of source lines and its own traceback-like dump.
    warnings.formatwarning = lambda message, category, *_args, **_kw: f"resnets: warning: {first_line(message)}\n"
    # Inductor's first compile logs that this CPU machine has no CUDA runtime: true, and nothing to act on.
    logging.getLogger("torch.utils.cpp_extension").setLevel(logging.ERROR)
    try:
        args = build_parser().parse_args(_fast_without_value(sys.argv[1:] if argv is None else list(argv)))
    except KeyboardInterrupt:  # the parser imports torch: a Ctrl-C may land here
        print("resnets: interrupted", file=sys.stderr)
        return 130
    try:
        status = args.func(args)
    except BrokenPipeError:  # output piped into `head`: stop quietly
        sys.stdout = open(os.devnull, "w")  # noqa: SIM115 - Python flushes stdout at exit; give it a sink
        return 0
    except ImportError as error:  # an optional package a subcommand needs
        package = (error.name or "").split(".")[0]
        hint = "pip install 'resnets[deploy]'" if package in ("onnx", "onnxruntime") else f"pip install {package}"
        print(f"resnets {args.command}: error: {first_line(error)} ({hint})", file=sys.stderr)
        return 2
    except (CliError, ResnetsError, ValueError, TypeError, OSError) as error:
        print(f"resnets {args.command}: error: {_as_flags(first_line(error), args)}", file=sys.stderr)
        return 2
    except Exception as error:  # noqa: BLE001 - anything unforeseen still gets one line, not a traceback
        message = first_line(error) if str(error).strip() else ""
        print(f"resnets {args.command}: error: {type(error).__name__}: {message}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    return status or 0


if __name__ == "__main__":
    sys.exit(main())
