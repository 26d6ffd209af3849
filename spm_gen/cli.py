"""The `spm-gen` command."""

from __future__ import annotations

import argparse
import json
import logging
import sys


def _demo(args: argparse.Namespace) -> int:
    from .demo import run_memory_demo

    summary = run_memory_demo(output_dir=args.output, image_size=args.image_size, seed=args.seed)
    receipts_path = f"{args.output}/receipts.json"
    with open(receipts_path) as f:
        receipts = json.load(f)
    log = logging.getLogger("spm_gen")
    for receipt in receipts:
        shown = dict(receipt, removed_ids=receipt["removed_ids"][:8], hashes=[h[:16] for h in receipt["hashes"][:3]])
        shown["labels"] = sorted(set(receipt["labels"]))
        log.info("receipt: %s", json.dumps(shown))
    log.info(
        "memory: %d -> %d items; class removed: %s; reload identical: %s; picture: %s",
        summary["items_before"],
        summary["items_after"],
        not summary["class_still_in_memory"],
        summary["reload_identical"],
        summary["picture"],
    )
    return 0


def _train(args: argparse.Namespace, rest: list[str]) -> int:
    from .training import load_config, parse_overrides, train

    config = load_config(args.config, parse_overrides(rest))
    if args.dry_run:
        sys.stdout.write(config.to_json() + "\n")
        return 0
    final = train(config)
    if final:
        logging.getLogger("spm_gen").info("pipeline: %s", final)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="spm-gen", description="Deep semi-parametric image models that forget.")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True)
    demo = sub.add_parser("demo", help="build, read, remove from, save and reload a memory bank of the digits")
    demo.add_argument("--output", default="outputs/demo", help="output folder (default: outputs/demo)")
    demo.add_argument("--image-size", type=int, default=8, help="digit image size in pixels (default: 8)")
    demo.add_argument("--seed", type=int, default=0)
    demo.set_defaults(func=_demo)
    train = sub.add_parser(
        "train",
        help="train an SPM or its twin (one process; use `accelerate launch scripts/train.py` for several)",
        description="Trains from a yaml config; override any key with --key value (e.g. --max_train_steps 200).",
    )
    train.add_argument("--config", required=True)
    train.add_argument("--dry-run", action="store_true", help="print the resolved config as json and exit")
    train.set_defaults(func=_train, takes_overrides=True)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args, rest = parser.parse_known_args(argv)
    if rest and not getattr(args, "takes_overrides", False):
        parser.error(f"unrecognized arguments: {' '.join(rest)}")
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO, format="%(message)s", stream=sys.stdout, force=True
    )
    return args.func(args, rest) if getattr(args, "takes_overrides", False) else args.func(args)


if __name__ == "__main__":
    sys.exit(main())
