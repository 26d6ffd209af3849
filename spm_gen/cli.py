"""The `spm-gen` command."""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from collections.abc import Callable

from .paths import (
    DIGITS_MODELS,
    MEMORIZATION_MODELS,
    check_labels_in_folder,
    check_model_folder,
    check_pipeline_folder,
    suggestion,
)
from .reporting.config import ReportConfig
from .utils.dataclass_options import add_options, from_options, named_as_options
from .utils.validation import check_positive_int, int_option

VERSION = "0.1.0"


EXIT_BAD_INPUT = 2  # a bad argument, path or config value
EXIT_NOT_VERIFIED = 3  # remove --verify --require-verified: a removed image is still produced
EXIT_OS_ERROR = 4  # the system refused: permissions, no space, a path of the wrong kind, a lock not taken


def guarded(run: Callable[[], int]) -> int:
    """Runs `run()`. Bad input (ValueError, FileNotFoundError) becomes one `error: ...` line and exit code 2,
    an OS-level failure one line naming the path and exit code 4, never a traceback: the one error path of the
    `spm-gen` command and of the scripts in scripts/."""
    try:
        return run()
    except (ValueError, FileNotFoundError) as e:
        _error(f"error: {e}")
        return EXIT_BAD_INPUT
    except OSError as e:
        path = f": '{e.filename}'" if e.filename else ""
        _error(f"error: {e.strerror or e}{path} (nothing was committed unless a line above says so)")
        return EXIT_OS_ERROR


class OneLineParser(argparse.ArgumentParser):
    """argparse whose refusal is one line naming the option and the value (and where help is), exit 2."""

    def error(self, message: str):
        self.exit(EXIT_BAD_INPUT, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def _error(line: str) -> None:
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stdout)
    logging.getLogger("spm_gen").error("%s", line)


def _log_report(summary: dict) -> None:
    """One JSON line per row of the report."""
    log = logging.getLogger("spm_gen")
    for row in summary["rows"]:
        log.info("%s", json.dumps({k: (round(v, 4) if isinstance(v, float) else v) for k, v in row.items()}))


def _demo(args: argparse.Namespace) -> int:
    from .demo import check_demo_models, run_forgetting_demo, run_memory_demo
    from .demo_memorization import check_regime_models, run_memorization_demo

    for flag, value in (("--num-images", args.num_images), ("--steps", args.steps), ("--image-size", args.image_size)):
        check_positive_int(flag, value)
    if not 0 <= args.seed < 2**63:  # a torch generator's range
        raise ValueError(f"--seed must be in [0, 2^63), got {args.seed}")
    check_demo_models(args.models)  # before minutes of work
    check_regime_models(args.memorization_models)
    log = logging.getLogger("spm_gen")
    summary = run_memory_demo(output_dir=args.output, image_size=args.image_size, seed=args.seed)
    log.info(
        "memory bank: %d -> %d items after removing class 3 and 5 ids in %.2f ms; reload identical: %s; picture: %s",
        summary["items_before"],
        summary["items_after"],
        sum(summary["removal_ms"].values()),
        summary["reload_identical"],
        summary["picture"],
    )
    log.info("the removal report on the digits models in %s ...", args.models)
    report = run_forgetting_demo(
        args.models, args.output, num_images=args.num_images, num_inference_steps=args.steps, seed=args.seed
    )
    _log_report(report)
    log.info("the memorization regime's models in %s ...", args.memorization_models)
    run_memorization_demo(  # logs each model's record as it is measured
        args.memorization_models,
        args.output,
        judge_dir=os.path.join(args.models, "judge"),
        num_inference_steps=args.steps,
        seed=args.seed,
    )
    return 0


def _train(args: argparse.Namespace, rest: list[str]) -> int:
    from .training.config import TrainConfig, configure  # light: the config is checked before torch loads

    config = configure(args.config, rest, TrainConfig, args.dry_run)
    if config is None:
        return 0
    from .training.loop import train

    pipeline = train(config)
    if pipeline is not None:
        logging.getLogger("spm_gen").info("pipeline: %s", pipeline)
    return 0


def _items(count: int) -> str:
    return f"{count} item" + ("" if count == 1 else "s")


def _remove(args: argparse.Namespace) -> int:
    check_model_folder(args.folder, require_bank=False)  # before the imports of torch and diffusers (seconds)
    settings = _verification_settings(args)  # the flags, and for --verify what the folder must be
    check_model_folder(args.folder)
    if args.label is not None:
        check_labels_in_folder(args.folder, [args.label])  # an unknown class: one line before torch loads
    from .memory.deletion import DeletionRequest, delete_from_folder, read_ids_file

    request = DeletionRequest(
        ids=list(args.ids or []) + (read_ids_file(args.ids_file) if args.ids_file else []),
        labels=[args.label] if args.label is not None else [],
        image_files=list(args.images or []),
        similar_files=list(args.similar_to or []),
        threshold=args.threshold,
        reason=args.reason,
    )
    outcome = delete_from_folder(
        args.folder, request, dry_run=args.dry_run, output=args.output, wait=args.wait, keep_images=args.verify
    )
    log = logging.getLogger("spm_gen")
    counts = {label: outcome.labels.count(label) for label in sorted(set(outcome.labels))}
    shown = ", ".join(outcome.ids[:10]) + (f" and {len(outcome.ids) - 10} more" if len(outcome.ids) > 10 else "")
    if args.dry_run and not outcome.ids:
        log.info("dry run: nothing would be removed (no memory item matches); nothing changed")
        return 0
    if args.dry_run:
        log.info(
            "dry run: would remove %s (per label %s): %s; nothing changed", _items(len(outcome.ids)), counts, shown
        )
        if settings is not None:
            seeds = {label: settings.class_seed(label) for label in counts}
            log.info(
                "dry run: --verify would sample %d images of each of the classes %s (seeds %s) and count the "
                "near-copies (within %s RMS) of each removed image",
                settings.samples,
                sorted(counts),
                seeds,
                settings.threshold,
            )
        return 0
    receipt = outcome.receipt
    log.info(
        "removed %s (per label %s) from %s in %.1f ms (removal %.2f ms); memory version %s -> %s; receipt: %s",
        _items(len(outcome.ids)),
        counts,
        outcome.folder,
        1e3 * outcome.seconds,
        1e3 * receipt.duration_s,
        receipt.version_before[:8],
        receipt.version_after[:8],
        outcome.receipt_path,
    )
    if settings is None:
        return 0
    return _verify(args, outcome, settings)


def _verification_settings(args: argparse.Namespace):
    """The verification settings of `--verify` (None without it), checked before anything is removed: the
    folder must be a saved SPM pipeline, the judge a classifier folder."""
    if not args.verify:
        if args.require_verified or args.judge or args.verify_samples is not None:
            raise ValueError("--require-verified, --judge and --verify-samples go with --verify")
        return None
    from .verification import VerificationSettings

    if not os.path.isfile(os.path.join(args.folder, "model_index.json")):
        kind = "a classifier folder" if os.path.isfile(os.path.join(args.folder, "config.json")) else "not a pipeline"
        raise ValueError(f"--verify samples a saved SPM pipeline; '{args.folder}' is {kind} (no model_index.json)")
    if not os.path.isdir(os.path.join(args.folder, "unet")):
        raise ValueError(f"--verify samples a saved SPM pipeline; '{args.folder}' has no unet/")
    if args.judge and not os.path.isfile(os.path.join(args.judge, "config.json")):
        raise ValueError(f"--judge '{args.judge}' is not a saved classifier folder (no config.json)")
    samples = 64 if args.verify_samples is None else args.verify_samples
    threshold = VerificationSettings.threshold if args.threshold is None else args.threshold
    settings = VerificationSettings(samples=samples, threshold=threshold)
    settings.check()
    return settings


def _verify(args: argparse.Namespace, outcome, settings) -> int:
    """Samples the edited model, writes the verification block into the receipt file; exit 3 with
    --require-verified when a removed image is still produced."""
    from .models.classifier_spm import load_classifier
    from .sampling import load_pipeline
    from .verification import attach_verification, verify_removal

    pipe = load_pipeline(outcome.folder)
    judge = load_classifier(args.judge)[0] if args.judge else None
    block = verify_removal(pipe, outcome.ids, outcome.labels, outcome.removed_images, settings, judge)
    log = logging.getLogger("spm_gen")
    attach_verification(outcome.receipt_path, block)
    for item in block["items"]:
        log.info(
            "verify %s (class %d): %s; nearest sample %.3f, nearest remaining memory item %s",
            item["id"],
            item["label"],
            item["verdict"],
            item["nearest_sample"],
            "n/a" if item["nearest_remaining"] is None else f"{item['nearest_remaining']:.3f}",
        )
    if block["reproduced"] and args.require_verified:
        log.error("error: the model still produces %s (the removal itself is committed)", block["reproduced"])
        return EXIT_NOT_VERIFIED
    return 0


def _report(args: argparse.Namespace) -> int:
    if not (args.remove_classes or args.remove_ids or args.remove_ids_file):
        raise ValueError("nothing to remove: give --remove-class, --remove-ids and/or --remove-ids-file")
    check_pipeline_folder(args.pipeline_dir, "PIPELINE")  # before the heavy imports
    for flag, folder in (("--twin", args.twin_dir), ("--oracle", args.oracle_dir)):
        if folder is not None:
            check_pipeline_folder(folder, flag)
    from .memory.deletion import read_ids_file
    from .reporting import run_report

    config = from_options(ReportConfig, args)
    if args.remove_ids_file:
        config.remove_ids += read_ids_file(args.remove_ids_file)
    with named_as_options(ReportConfig):
        config.check()
    _log_report(run_report(config))
    return 0


class _TrainHelp(argparse.Action):
    """`spm-gen train --help`: the usual help, then every config key `--key value` accepts (imported only here,
    so that the other help texts stay fast)."""

    def __call__(self, parser, namespace, values, option_string=None) -> None:
        from .training.config import config_keys_help

        parser.epilog = config_keys_help()
        parser.formatter_class = argparse.RawDescriptionHelpFormatter
        parser.print_help()
        parser.exit()


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(prog="spm-gen", description="Deep semi-parametric image models that forget.")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    parser.add_argument("--version", action="version", version=f"%(prog)s {VERSION}")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=OneLineParser)
    demo = sub.add_parser(
        "demo",
        help="the forgetting demo on the digits: a memory bank, then the removal report on trained models",
        description="Removes class 3 and 20 images from the shipped digits SPM (assets/digits) and writes "
        "report.md with the twin (random-label unlearning) and the oracle for comparison.",
    )
    demo.add_argument("--output", default="outputs/demo", help="output folder (default: outputs/demo)")
    demo.add_argument("--models", default=DIGITS_MODELS, help="spm/, twin/, oracle/, judge/ (default: assets/digits)")
    demo.add_argument(
        "--memorization-models",
        default=MEMORIZATION_MODELS,
        help="the memorization regime's twin/, spm/, oracle_twin/, oracle_spm/, removed.json "
        "(default: assets/memorization)",
    )
    demo.add_argument("--image-size", type=int, default=8, help="digit size of the memory-bank part (default: 8)")
    demo.add_argument("--num-images", type=int, default=300, help="generations per model (default: 300)")
    demo.add_argument("--steps", type=int, default=50, help="DDIM steps (default: 50)")
    demo.add_argument("--seed", type=int, default=0, help="seed of sampling and of the removed ids (default: 0)")
    demo.set_defaults(func=_demo)
    train = sub.add_parser(
        "train",
        help="train an SPM or its twin (one process; use `accelerate launch scripts/train.py` for several)",
        description="Trains from a yaml config; override any key with --key value (e.g. --max_train_steps 200).",
        add_help=False,
    )
    train.add_argument("-h", "--help", action=_TrainHelp, nargs=0, help="show this help and the config keys, and exit")
    train.add_argument(
        "--config", required=True, help="a yaml run config, e.g. configs/digits.yaml or configs/tiny.yaml"
    )
    train.add_argument("--dry-run", action="store_true", help="print the resolved config as json and exit")
    train.set_defaults(func=_train, takes_overrides=True)
    check = sub.add_parser(
        "check",
        help="verify a saved pipeline, classifier or memory bank folder; list every problem (exit 0: none, 1: some)",
        description="Reads the folder and changes nothing: file kinds and links, json files, the bank's commit, "
        "shards, digests and content hashes, files a killed save left, the receipt log and the receipts/ files.",
    )
    check.add_argument("folder", help="a saved pipeline, classifier or memory bank folder")
    check.add_argument("--json", action="store_true", help="print the problems as json")
    check.set_defaults(func=_check)
    remove = sub.add_parser(
        "remove",
        help="remove images from a saved pipeline's or classifier's memory",
        description="Loads FOLDER/memory_bank, removes the requested items, saves atomically and writes the receipt.",
    )
    remove.add_argument("folder", help="a saved SPMDiffusionPipeline or classifier folder")
    what = remove.add_mutually_exclusive_group(required=True)
    what.add_argument("--ids", nargs="+", help="item ids")
    what.add_argument("--ids-file", help="a file of ids (one per line, or a json list)")
    what.add_argument("--class", dest="label", type=int, help="a whole class")
    what.add_argument("--images", nargs="+", help="image files, matched by content hash")
    what.add_argument("--similar-to", nargs="+", help="image files; removes items within --threshold of them")
    remove.add_argument(
        "--threshold",
        type=float,
        help="RMS pixel distance in [0, 1]: the match distance of --similar-to, and the near-copy distance of "
        "--verify (default 0.04)",
    )
    remove.add_argument(
        "--verify",
        action="store_true",
        help="after the removal, sample the classes that lost items and report for each removed image whether "
        "the model still produces it (written into the receipt)",
    )
    remove.add_argument("--verify-samples", type=int, help="generations per affected class for --verify (default 64)")
    remove.add_argument("--judge", help="a classifier folder: --verify also gives distances in its feature space")
    remove.add_argument(
        "--require-verified",
        action="store_true",
        help="with --verify: exit with status 3 when a removed image is still produced (the removal stays)",
    )
    remove.add_argument("--reason", default="", help="recorded in the receipt")
    remove.add_argument("--dry-run", action="store_true", help="show what would be removed; change nothing")
    remove.add_argument("--output", help="write the edited model to this new folder instead of editing in place")
    remove.add_argument(
        "--wait", type=float, default=60.0, help="seconds to wait for another removal on the folder (default: 60)"
    )
    remove.set_defaults(func=_remove)
    report = sub.add_parser(
        "report",
        help="measure a removal: sample before and after, compare with the twin and the oracle, write report.md",
        description="Removes from a copy of the pipeline's memory (the folder is not changed) and writes pictures, "
        "report.json and report.md to --output.",
    )
    add_options(report, ReportConfig)  # the options are ReportConfig's fields (and its twin's)
    report.add_argument("--remove-ids-file", help="a file of ids to remove (one per line, or a json list)")
    report.set_defaults(func=_report)
    serve = sub.add_parser(
        "serve",
        help="serve a saved SPM over HTTP: generate, remove (taking effect for every later request), receipts",
        description="Needs `pip install spm-gen[serve]`. Removal and receipts need the bearer token read from "
        "$SPM_GEN_TOKEN or --token-file (never a command-line value); without one they are refused.",
    )
    serve.add_argument("folder", help="a saved SPMDiffusionPipeline folder (with memory)")
    serve.add_argument("--host", default="127.0.0.1", help="address to bind (default: 127.0.0.1, loopback only)")
    serve.add_argument("--port", type=int_option(1), default=8000, help="port (default: 8000)")
    serve.add_argument("--classifier", help="a classifier folder: the judge of removals with verify")
    serve.add_argument("--token-file", help="a file whose first line is the bearer token (else $SPM_GEN_TOKEN)")
    serve.add_argument("--protect-generate", action="store_true", help="generation needs the token too")
    serve.add_argument(
        "--max-upload-bytes", type=int_option(1), default=8 * 2**20, help="uploads per /remove request (default: 8 MiB)"
    )
    serve.add_argument(
        "--max-image-pixels",
        type=int_option(1),
        default=2**20,
        help="pixels per uploaded image, before decoding (default: 2^20)",
    )
    serve.add_argument(
        "--max-concurrent-generations", type=int_option(1), default=2, help="generations run at once (default: 2)"
    )
    serve.add_argument(
        "--generation-queue", type=int_option(0), default=8, help="generations that may wait; beyond, 503 (default: 8)"
    )
    serve.add_argument(
        "--max-generations-per-client",
        type=int_option(1),
        default=4,
        help="generations running or queued from one client address; beyond, 429 (default: 4; behind a proxy "
        "every client shares its address)",
    )
    serve.set_defaults(func=_serve)
    return parser


def _check(args: argparse.Namespace) -> int:
    from .memory.folder_check import check_folder

    problems = check_folder(args.folder)
    if args.json:
        lines = [json.dumps({"folder": args.folder, "problems": [p.to_dict() for p in problems]}, indent=2)]
    else:
        summary = f"{len(problems)} problem(s) in {args.folder}" if problems else f"ok: no problem in {args.folder}"
        lines = [*map(str, problems), summary]
    sys.stdout.write("\n".join(lines) + "\n")
    return 1 if problems else 0


def _serve(args: argparse.Namespace) -> int:
    import importlib.util

    missing = [m for m in ("fastapi", "uvicorn", "multipart") if importlib.util.find_spec(m) is None]
    if missing:
        raise ValueError(f"spm-gen serve needs {missing}: pip install 'spm-gen[serve]'")
    check_pipeline_folder(args.folder, "FOLDER")
    if not 0 < args.port < 65536:
        raise ValueError(f"--port must be in 1..65535, got {args.port}")
    import uvicorn

    from .serving.app import ServeSettings, create_app, read_token

    settings = ServeSettings(
        args.folder,
        read_token(args.token_file),
        args.protect_generate,
        args.classifier,
        max_upload_bytes=args.max_upload_bytes,
        max_image_pixels=args.max_image_pixels,
        max_concurrent_generations=args.max_concurrent_generations,
        generation_queue=args.generation_queue,
        max_generations_per_client=args.max_generations_per_client,
    )
    if settings.token is None:
        logging.getLogger("spm_gen").warning("no token configured: /remove and /receipts are refused")
    uvicorn.run(create_app(settings), host=args.host, port=args.port, log_level="info")
    return 0


def _subparser(parser: argparse.ArgumentParser, command: str) -> argparse.ArgumentParser:
    (subparsers,) = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    return subparsers.choices[command]


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args, rest = parser.parse_known_args(argv)
    if rest and not getattr(args, "takes_overrides", False):
        options = [o for action in _subparser(parser, args.command)._actions for o in action.option_strings]
        parser.error(f"unrecognized arguments: {' '.join(rest)}{suggestion(rest[0].split('=')[0], options)}")
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO, format="%(message)s", stream=sys.stdout, force=True
    )
    return guarded(lambda: args.func(args, rest) if getattr(args, "takes_overrides", False) else args.func(args))


if __name__ == "__main__":
    sys.exit(main())
