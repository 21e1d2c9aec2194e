"""Shared command-line plumbing: config arguments and the ``ERROR: ...`` exit convention."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Callable

from unim2_core.errors import Unim2Error


def add_config_arguments(parser: argparse.ArgumentParser) -> None:
    """``--config FILE`` and repeatable ``--set section.key=value`` overrides."""
    parser.add_argument("--config", required=True, help="training config YAML (see config/)")
    parser.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a config key, e.g. --set train.steps=500 (repeatable)",
    )


def run_cli(body: Callable[[], int]) -> int:
    """Run a command body; our errors become ``ERROR: ...`` on stderr and exit status 1.

    Library log records (INFO and up, e.g. the trainer's collapse WARNINGs) go to stderr.
    """
    logging.basicConfig(level=logging.INFO, format="%(levelname)s: %(message)s")
    try:
        return body()
    except Unim2Error as err:
        print(f"ERROR: {err}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
