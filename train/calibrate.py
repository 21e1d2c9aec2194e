"""``unim2_calibrate``: place a config's loss shifts from its cached features, without training."""

from __future__ import annotations

import argparse
from pathlib import Path

import yaml

from unim2_core.atomic import atomic_write_text
from unim2_core.cli import add_config_arguments, run_cli
from unim2_core.model.loss import PAIRS
from unim2_core.training.calibration import Calibration, all_shifts_auto
from unim2_core.training.config import config_to_dict, load_config
from unim2_core.training.trainer import calibrate_run


def calibration_table(calibration: Calibration) -> str:
    """Markdown table: per modality and pair, the shift, its quantile and F's spread."""
    rows = [
        "| modality | pair | shift | quantile | F 5% | F 50% | F 95% | placed |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name, cal in calibration.modalities.items():
        for pair in PAIRS:
            low, _, median, _, high = cal.distribution.get(pair, [float("nan")] * 5)
            rows.append(
                f"| {name} | {pair} | {getattr(cal.shifts, pair):.4f} | "
                f"{getattr(cal.quantiles, pair):.3f} | {low:.3f} | {median:.3f} | {high:.3f} | "
                f"{'auto' if pair in cal.calibrated else 'config'} |"
            )
    return "\n".join(rows)


def main(argv: list[str] | None = None) -> int:
    """Parse arguments, calibrate, print the table and the calibrated loss block."""
    parser = argparse.ArgumentParser(
        prog="unim2_calibrate",
        description="Measure each modality's self / kNN / random feature-similarity "
        "distributions on the cached training features and place every loss shift at the "
        "quantile where the paper's NYU shifts sit in theirs (unim2_core.training.calibration). "
        "Extracts the feature cache if needed; unim2_train then reuses it.",
    )
    add_config_arguments(parser)
    parser.add_argument(
        "--only-auto",
        action="store_true",
        help="calibrate only the shifts the config marks 'auto' (default: every shift)",
    )
    parser.add_argument(
        "--out", type=Path, help="write the whole config with the calibrated shifts to this YAML"
    )
    parser.add_argument("--no-progress", action="store_true", help="hide progress bars")
    args = parser.parse_args(argv)

    def body() -> int:
        config = load_config(args.config, args.overrides)
        if not args.only_auto:
            config = all_shifts_auto(config)
        calibration = calibrate_run(config, progress=not args.no_progress)
        print(calibration_table(calibration))
        plain = config_to_dict(calibration.config)
        block = {"loss": {"modalities": plain["loss"]["modalities"]}}
        print(yaml.safe_dump(block, sort_keys=False))
        if args.out is not None:
            atomic_write_text(args.out, yaml.safe_dump(plain, sort_keys=False))
            print(f"config: {args.out}")
        return 0

    return run_cli(body)


if __name__ == "__main__":
    raise SystemExit(main())
