"""``unim2_train``: train UniM2 heads (or a baseline) from a YAML config; resumes by default."""

from __future__ import annotations

import argparse
import json
import sys

from unim2_core.cli import (
    add_config_arguments,
    add_device_argument,
    add_progress_argument,
    add_restart_argument,
    config_overrides,
    run_cli,
)
from unim2_core.training.calibration import all_shifts_auto
from unim2_core.training.config import load_config
from unim2_core.training.trainer import Trainer


def main(argv: list[str] | None = None) -> int:
    """Parse arguments, load the config, train, print where the model is."""
    parser = argparse.ArgumentParser(
        prog="unim2_train",
        description="Train UniM2 heads on cached frozen-backbone features. Ctrl-C or SIGTERM "
        "saves the state at the step reached; started again with the same config (train.steps "
        "may be raised) the run resumes from its output folder.",
    )
    add_config_arguments(parser)
    parser.add_argument(
        "--out", help="output folder of the run (default: output_dir of the config)"
    )
    add_restart_argument(parser, "discard a previous run's state and start from step 0")
    add_device_argument(parser)
    add_progress_argument(parser)
    parser.add_argument(
        "--calibrate",
        action="store_true",
        help="calibrate every loss shift from the cached features (as 'shift: auto' does); "
        "the values are written to the run's config.yaml and calibration.json",
    )
    args = parser.parse_args(argv)

    def body() -> int:
        overrides = config_overrides(args)
        if args.out is not None:
            overrides.append(f"output_dir={args.out}")
        config = load_config(args.config, overrides)
        if args.calibrate:
            config = all_shifts_auto(config)
        trainer = Trainer(config, restart=args.restart, progress=not args.no_progress)
        if trainer.resumed_step:
            print(
                f"resuming from step {trainer.resumed_step} of {config.train.steps} "
                f"({trainer.state_path}; --restart starts over)",
                file=sys.stderr,
            )
        for note in trainer.notes:
            print(note)
        result = trainer.run()
        print(json.dumps(result.metrics, indent=2))
        print(f"model: {result.bundle_path}")
        return 0

    return run_cli(body)


if __name__ == "__main__":
    raise SystemExit(main())
