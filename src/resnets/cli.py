"""The `resnets` command: thin subcommands, each calling one library function.

Example:
    $ resnets models "resnet*" --json
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Sequence
from typing import Any

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
formats: PyTorch .pth/.pt (bare state_dict or training checkpoint), .safetensors, Keras .h5/.keras,
Paddle .pdparams (paddle.vision names or Caffe-style names as in the original release)""",
}


class CliError(Exception):
    """A user-facing error: printed as one line, exit status 2."""


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
    from resnets.weights import convert

    destination = convert(args.source, args.destination, args.model, **_parse_overrides(args.set))
    if args.json:
        print(json.dumps({"model": args.model, "source": str(args.source), "destination": str(destination)}))
    else:
        print(f"wrote {destination} ({args.model}, from {args.source})")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="resnets", description="The ResNet family on PyTorch.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def add(name: str, func: Callable[[argparse.Namespace], None], help: str) -> argparse.ArgumentParser:
        command = sub.add_parser(
            name,
            help=help,
            description=help,
            epilog=EXAMPLES.get(name),
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        command.set_defaults(func=func)
        return command

    models = add("models", cmd_models, "list the registered networks")
    models.add_argument("pattern", nargs="?", default="*", help="shell-style name pattern (default: all)")
    fmt = models.add_mutually_exclusive_group()
    fmt.add_argument("--json", action="store_true", help="JSON rows with parameters and multiply-adds")
    fmt.add_argument("--markdown", action="store_true", help="a Markdown table with parameters and multiply-adds")

    summary = add("summary", cmd_summary, "layer table and totals of one network (Keras's counting)")
    summary.add_argument("model")
    summary.add_argument("--input-size", nargs=3, type=int, metavar=("C", "H", "W"))
    summary.add_argument("--depth", type=int, default=2, help="nesting depth of the table (default: 2)")
    summary.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE", help="config overrides")
    summary.add_argument("--json", action="store_true")

    convert = add("convert", cmd_convert, "convert weights of any supported format to .safetensors")
    convert.add_argument("source", help="weight file: .pth .pt .safetensors .h5 .keras .pdparams")
    convert.add_argument("destination", help="the .safetensors file to write (atomically)")
    convert.add_argument("--model", required=True, help="registered model the weights are for")
    convert.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE", help="config overrides (num_classes=10)")
    convert.add_argument("--json", action="store_true")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        args.func(args)
    except BrokenPipeError:  # output piped into `head`
        sys.stderr.close()
    except (CliError, ValueError, TypeError, OSError) as error:
        message = str(error).splitlines()[0] if str(error) else type(error).__name__
        print(f"resnets {args.command}: error: {message}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
