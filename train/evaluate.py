"""``unim2_eval``: score a trained checkpoint on a labelled split, or run the baseline comparison.

Examples::

    unim2_eval --checkpoint runs/nyu/model.unim2.pt --config config/train_nyu.yaml --split test
    unim2_eval --checkpoint runs/nyu/model.unim2.pt --config config/train_nyu.yaml \\
        --protocol full --out runs/nyu/eval-full
    unim2_eval --config config/train_nyu.yaml --baselines --variants kmeans_rgb,rgb_only,unim2
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any, cast

from unim2_core.cli import (
    add_config_arguments,
    add_device_argument,
    add_progress_argument,
    add_restart_argument,
    config_overrides,
    run_cli,
)
from unim2_core.data.datasets import open_dataset
from unim2_core.errors import ConfigError
from unim2_core.evaluation.evaluate import (
    METRICS_FILE,
    PROTOCOLS,
    REPORT_FILE,
    EvalProtocol,
    evaluate_split,
    format_report,
    write_report,
)
from unim2_core.model.backbone import load_backbone
from unim2_core.model.checkpoint import load_bundle
from unim2_core.runtime.segmenter import Segmenter
from unim2_core.training.baselines import (
    VARIANTS,
    Variant,
    compare,
    format_comparison,
    with_modalities,
    write_comparison,
)
from unim2_core.training.config import TrainConfig, load_config
from unim2_core.training.trainer import open_splits

SELECTION = "selection"


def _parse_variants(text: str) -> list[Variant]:
    names = [name.strip() for name in text.split(",") if name.strip()]
    unknown = [name for name in names if name not in VARIANTS]
    if unknown or not names:
        raise ConfigError(
            f"--variants {text!r}: unknown {unknown}; choose from {', '.join(VARIANTS)}"
        )
    return cast(list[Variant], names)


def _open_split(config: TrainConfig, split: str | None) -> tuple[Any, str]:
    """The frames to evaluate and their name: a named dataset split, the config's selection
    split (``selection``, also a held-out share of train), or by default the test split when
    the config has one, else the selection split."""
    if split is not None and split != SELECTION:
        section = config.dataset
        reader = open_dataset(
            section.kind,
            section.root,
            split=split,
            modalities=config.modality_names,
            **section.options,
        )
        return reader, split
    splits = open_splits(config)
    if split is None and splits.test is not None and splits.test_name is not None:
        return splits.test, splits.test_name
    return splits.selection, splits.selection_name


def _check_report_folder(out: Path) -> None:
    """Refuse an output folder holding anything but an earlier report of this command.

    A report writes ``metrics.json``: into a training run's folder it would silently replace
    that run's final metrics.
    """
    if not out.is_dir():
        if out.exists():
            raise ConfigError(f"--out {str(out)!r} is a file, not a folder")
        return
    entries = sorted(p.name for p in out.iterdir())
    if entries and REPORT_FILE not in entries:
        shown = ", ".join(entries[:4]) + (", ..." if len(entries) > 4 else "")
        raise ConfigError(
            f"--out {str(out)!r} already holds files that are not an evaluation report "
            f"({shown}); the report would replace its {METRICS_FILE}. Choose a new folder"
        )


def evaluate_checkpoint(args: argparse.Namespace) -> int:
    """Evaluate ``--checkpoint`` on a split and write the report."""
    config = load_config(args.config, config_overrides(args))
    if args.out:
        _check_report_folder(Path(args.out))
    bundle = load_bundle(args.checkpoint)
    missing = [m for m in bundle.modalities if m not in config.modalities]
    if missing:
        raise ConfigError(
            f"checkpoint {args.checkpoint!r} needs modalities {missing}, which config "
            f"{args.config!r} does not list"
        )
    config = with_modalities(config, bundle.modalities)
    protocol: EvalProtocol = args.protocol or config.eval.protocol
    crop_size = config.eval.crop_size
    backbone = load_backbone(
        bundle.backbone.name,
        args.backbone_weights or config.backbone.weights,
        feature_layer=bundle.backbone.feature_layer,
    )
    segmenter = Segmenter(
        bundle,
        backbone,
        device=config.train.device,
        shorter_side=crop_size if protocol == "paper" else config.crops.shorter_side,
        apply_mapping=False,
        cluster_order="code" if protocol == "paper" else "similarity",
    )
    frames, split_name = _open_split(config, args.split)
    report = evaluate_split(
        segmenter,
        frames,
        protocol=protocol,
        crop_size=crop_size,
        split_name=split_name,
        keep_frames=args.frames,
        progress=not args.no_progress,
    )
    safe = "".join(c if c.isalnum() or c in "-_" else "_" for c in split_name)
    out = Path(args.out) if args.out else Path(args.checkpoint).parent / f"eval-{safe}-{protocol}"
    _check_report_folder(out)
    write_report(report, out)
    print(format_report(report), end="")
    print(f"report: {out}")
    return 0


def run_baselines(args: argparse.Namespace) -> int:
    """Run the baseline variants and print the comparison table."""
    config = load_config(args.config, config_overrides(args))
    variants = _parse_variants(args.variants) if args.variants else list(VARIANTS)
    out = Path(args.out) if args.out else Path(config.output_dir) / "baselines"
    table = compare(config, variants, out, restart=args.restart, progress=not args.no_progress)
    write_comparison(table, out)
    print(format_comparison(table), end="")
    print(f"comparison: {out}")
    return 0


def main(argv: list[str] | None = None) -> int:
    """Parse arguments and run the evaluation or the baseline comparison."""
    parser = argparse.ArgumentParser(
        prog="unim2_eval",
        description="Hungarian-matched mIoU / accuracy / per-class IoU of a checkpoint on a "
        "labelled split (metrics.json, report.md, confusion matrix, best/worst overlays), or "
        "the baseline comparison (--baselines).",
    )
    add_config_arguments(parser)
    mode = parser.add_mutually_exclusive_group(required=True)
    mode.add_argument("--checkpoint", help="trained bundle (model.unim2.pt) to evaluate")
    mode.add_argument(
        "--baselines", action="store_true", help="run the baseline variants and compare them"
    )
    parser.add_argument(
        "--split",
        help="dataset split to evaluate, or 'selection' for the config's selection split "
        "(default: the test split when the config has one, else the selection split)",
    )
    parser.add_argument(
        "--protocol", choices=PROTOCOLS, help="evaluation protocol (default: eval.protocol)"
    )
    parser.add_argument(
        "--backbone-weights", help="backbone weights (default: backbone.weights of the config)"
    )
    parser.add_argument(
        "--frames", type=int, default=3, help="best and worst frames to draw (default 3)"
    )
    parser.add_argument(
        "--variants",
        help=f"comma-separated baseline variants (default: all of {','.join(VARIANTS)})",
    )
    add_restart_argument(parser, "baselines: retrain variants from scratch")
    parser.add_argument(
        "--out",
        help="output folder, new or an earlier report of this command (default: "
        "eval-<split>-<protocol> next to the checkpoint, or <output_dir>/baselines)",
    )
    add_device_argument(parser)
    add_progress_argument(parser)
    args = parser.parse_args(argv)
    if args.baselines and (args.split or args.protocol or args.backbone_weights):
        parser.error("--split, --protocol and --backbone-weights apply to --checkpoint only")
    if args.checkpoint and (args.variants or args.restart):
        parser.error("--variants and --restart apply to --baselines only")
    if args.frames < 0:
        parser.error("--frames must be >= 0")
    return run_cli(lambda: run_baselines(args) if args.baselines else evaluate_checkpoint(args))


if __name__ == "__main__":
    raise SystemExit(main())
