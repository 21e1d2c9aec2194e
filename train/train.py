"""``unim2_train``: train UniM2 heads (or a baseline) from a YAML config; resumes by default."""

from __future__ import annotations

import argparse
import json

from unim2_core.calibration import all_shifts_auto
from unim2_core.config import load_config
from unim2_core.trainer import Trainer

from .cli import add_config_arguments, run_cli


def main(argv: list[str] | None = None) -> int:
    """Parse arguments, load the config, train, print where the model is."""
    parser = argparse.ArgumentParser(
        prog="unim2_train",
        description="Train UniM2 heads on cached frozen-backbone features. An interrupted run "
        "resumes from its output_dir when started again with the same config.",
    )
    add_config_arguments(parser)
    parser.add_argument("--restart", action="store_true", help="discard a previous run's state")
    parser.add_argument("--no-progress", action="store_true", help="hide progress bars")
    parser.add_argument(
        "--calibrate",
        action="store_true",
        help="calibrate every loss shift from the cached features (as 'shift: auto' does); "
        "the values are written to the run's config.yaml and calibration.json",
    )
    args = parser.parse_args(argv)

    def body() -> int:
        config = load_config(args.config, args.overrides)
        if args.calibrate:
            config = all_shifts_auto(config)
        trainer = Trainer(config, restart=args.restart, progress=not args.no_progress)
        for note in trainer.notes:
            print(note)
        result = trainer.run()
        print(json.dumps(result.metrics, indent=2))
        print(f"model: {result.bundle_path}")
        return 0

    return run_cli(body)


if __name__ == "__main__":
    raise SystemExit(main())
