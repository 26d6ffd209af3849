"""The `spm-gen` command."""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from collections.abc import Callable
from dataclasses import replace

from .cli_options import CheckOptions, DemoOptions, RemoveOptions, ReportOptions, ServeOptions
from .paths import (
    check_labels_in_folder,
    check_model_folder,
    check_pipeline_folder,
    suggestion,
)
from .training.config import TrainConfig, TrainOptions  # light: the config is checked before torch loads
from .training.overrides import USAGE, add_config_keys, config_overrides
from .utils.dataclass_options import add_options, check_options, from_options

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


def _demo(args: DemoOptions) -> int:
    from .demo import check_demo_models, run_forgetting_demo, run_memory_demo
    from .demo_memorization import check_regime_models, run_memorization_demo

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


def _train(args: TrainOptions, overrides: dict[str, str]) -> int:
    from .training.config import configure

    config = configure(args.config, overrides, TrainConfig, args.dry_run)
    if config is None:
        return 0
    from .training.loop import train

    pipeline = train(config)
    if pipeline is not None:
        logging.getLogger("spm_gen").info("pipeline: %s", pipeline)
    return 0


def _items(count: int) -> str:
    return f"{count} item" + ("" if count == 1 else "s")


def _remove(args: RemoveOptions) -> int:
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


def _verification_settings(args: RemoveOptions):
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


def _verify(args: RemoveOptions, outcome, settings) -> int:
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


def _report(args: ReportOptions) -> int:
    if not (args.remove_classes or args.remove_ids or args.remove_ids_file):
        raise ValueError("nothing to remove: give --remove-class, --remove-ids and/or --remove-ids-file")
    check_pipeline_folder(args.pipeline_dir, "PIPELINE")  # before the heavy imports
    for flag, folder in (("--twin", args.twin_dir), ("--oracle", args.oracle_dir)):
        if folder is not None:
            check_pipeline_folder(folder, flag)
    from .memory.deletion import read_ids_file
    from .reporting import run_report

    if args.remove_ids_file:
        args.remove_ids += read_ids_file(args.remove_ids_file)
    check_options(args)
    _log_report(run_report(args))
    return 0


def _check(args: CheckOptions) -> int:
    from .memory.folder_check import check_folder

    problems = check_folder(args.folder)
    if args.json:
        lines = [json.dumps({"folder": args.folder, "problems": [p.to_dict() for p in problems]}, indent=2)]
    else:
        summary = f"{len(problems)} problem(s) in {args.folder}" if problems else f"ok: no problem in {args.folder}"
        lines = [*map(str, problems), summary]
    sys.stdout.write("\n".join(lines) + "\n")
    return 1 if problems else 0


def _serve(args: ServeOptions) -> int:
    import importlib.util

    missing = [m for m in ("fastapi", "uvicorn", "multipart") if importlib.util.find_spec(m) is None]
    if missing:
        raise ValueError(f"spm-gen serve needs {missing}: pip install 'spm-gen[serve]'")
    check_pipeline_folder(args.folder, "FOLDER")
    if not 0 < args.port < 65536:
        raise ValueError(f"--port must be in 1..65535, got {args.port}")
    import uvicorn

    from .serving.app import create_app
    from .serving.settings import read_token

    settings = replace(args, token=read_token(args.token_file))
    if settings.token is None:
        logging.getLogger("spm_gen").warning("no token configured: /remove and /receipts are refused")
    uvicorn.run(create_app(settings), host=args.host, port=args.port, log_level="info")
    return 0


COMMANDS = {  # name: (its options, what runs it, its help, its description)
    "demo": (
        DemoOptions,
        _demo,
        "the forgetting demo on the digits: a memory bank, then the removal report on trained models",
        "Removes class 3 and 20 images from the shipped digits SPM (assets/digits) and writes report.md with the "
        "twin (random-label unlearning) and the oracle for comparison.",
    ),
    "train": (
        TrainOptions,
        _train,
        "train an SPM or its twin (one process; use `accelerate launch scripts/train.py` for several)",
        "Trains from a yaml config; override any key with --key value (e.g. --max_train_steps 200).",
    ),
    "check": (
        CheckOptions,
        _check,
        "verify a saved pipeline, classifier or memory bank folder; list every problem (exit 0: none, 1: some)",
        "Reads the folder and changes nothing: file kinds and links, json files, the bank's commit, shards, digests "
        "and content hashes, files a killed save left, the receipt log and the receipts/ files.",
    ),
    "remove": (
        RemoveOptions,
        _remove,
        "remove images from a saved pipeline's or classifier's memory",
        "Loads FOLDER/memory_bank, removes the requested items, saves atomically and writes the receipt.",
    ),
    "report": (
        ReportOptions,
        _report,
        "measure a removal: sample before and after, compare with the twin and the oracle, write report.md",
        "Removes from a copy of the pipeline's memory (the folder is not changed) and writes pictures, report.json "
        "and report.md to --output.",
    ),
    "serve": (
        ServeOptions,
        _serve,
        "serve a saved SPM over HTTP: generate, remove (taking effect for every later request), receipts",
        "Needs `pip install spm-gen[serve]`. Removal and receipts need the bearer token read from $SPM_GEN_TOKEN or "
        "--token-file (never a command-line value); without one they are refused.",
    ),
}


def build_parser() -> argparse.ArgumentParser:
    """One subcommand per entry of `COMMANDS`, its options those of its dataclass."""
    parser = OneLineParser(prog="spm-gen", description="Deep semi-parametric image models that forget.")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    parser.add_argument("--version", action="version", version=f"%(prog)s {VERSION}")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=OneLineParser)
    for name, (options, _, help, description) in COMMANDS.items():
        # train: no abbreviations, so that a mistyped key (`--max_train_step`) is refused, not taken as another
        usage = {"usage": USAGE, "allow_abbrev": False} if name == "train" else {}
        command = sub.add_parser(name, help=help, description=description, **usage)
        add_options(command, options)
        if name == "train":
            add_config_keys(command, TrainConfig)
        command.set_defaults(options=options)
    return parser


def _subparser(parser: argparse.ArgumentParser, command: str) -> argparse.ArgumentParser:
    (subparsers,) = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    return subparsers.choices[command]


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args, rest = parser.parse_known_args(argv)
    if rest:
        options = [o for action in _subparser(parser, args.command)._actions for o in action.option_strings]
        parser.error(f"unrecognized arguments: {' '.join(rest)}{suggestion(rest[0].split('=')[0], options)}")
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO, format="%(message)s", stream=sys.stdout, force=True
    )
    return guarded(lambda: _run(args.command, args))


def _run(command: str, args: argparse.Namespace) -> int:
    """The subcommand with its options built (and checked, naming the flag of a bad value) from `args`."""
    options = from_options(args.options, args)
    if command != "report":  # the report checks once its ids file is read
        check_options(options)
    run = COMMANDS[command][1]
    return run(options, config_overrides(args)) if command == "train" else run(options)


if __name__ == "__main__":
    sys.exit(main())
