"""Shared command-line plumbing: the options every command spells the same way, and the
``ERROR: ...`` exit convention.

Conventions (README, "Command-line conventions"): ``--out`` names the output folder,
``--restart`` discards a previous run's state (``--fresh`` is its old spelling in
``unim2_demo``), ``--no-progress`` hides progress bars, ``--device`` picks where a model runs.
"""

from __future__ import annotations

import argparse
import logging
import math
import sys
from collections.abc import Callable

from unim2_core.device import DEVICE_HELP, device_problem
from unim2_core.errors import Interrupted, Unim2Error


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


def device_argument(text: str) -> str:
    """argparse type of ``--device``: a device name spelled as every command accepts it."""
    problem = device_problem(text)
    if problem is not None:
        raise argparse.ArgumentTypeError(problem)
    return text


def add_device_argument(
    parser: argparse.ArgumentParser | argparse._ArgumentGroup,
    default: str = "train.device of the config, auto",
) -> None:
    """``--device``: where the model runs (overrides ``train.device`` of a config); ``default``
    says in the help what applies without it."""
    parser.add_argument(
        "--device",
        type=device_argument,
        help=f"where the model runs: {DEVICE_HELP} (default: {default})",
    )


def positive_int(text: str) -> int:
    """argparse type of a count: a whole number >= 1."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def positive_float(text: str, *, allow_inf: bool = False) -> float:
    """argparse type of a duration, rate or tolerance: a number > 0, finite unless
    ``allow_inf`` (bind it with ``functools.partial``)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not (value > 0 and (allow_inf or math.isfinite(value))):
        bound = "a number > 0" if allow_inf else "a finite number > 0"
        raise argparse.ArgumentTypeError(f"must be {bound}, got {text}")
    return value


def add_progress_argument(parser: argparse.ArgumentParser) -> None:
    """``--no-progress``: hide progress bars (they are shown by default)."""
    parser.add_argument("--no-progress", action="store_true", help="hide progress bars")


def add_restart_argument(parser: argparse.ArgumentParser, help_text: str) -> None:
    """``--restart`` (``--fresh`` accepted as an alias): discard a previous run's state."""
    parser.add_argument("--restart", "--fresh", dest="restart", action="store_true", help=help_text)


def config_overrides(args: argparse.Namespace) -> list[str]:
    """The ``--set`` overrides, plus ``train.device`` when ``--device`` was given."""
    overrides: list[str] = list(args.overrides)
    if getattr(args, "device", None) is not None:
        overrides.append(f"train.device={args.device}")
    return overrides


def run_cli(body: Callable[[], int]) -> int:
    """Run a command body; our errors become ``ERROR: ...`` on stderr and exit status 1.

    Ctrl-C exits with 130 after one line; a command that saved its work when interrupted
    (:class:`Interrupted`) says where it stopped and exits with 128 + the signal number.
    Library log records (INFO and up, e.g. the trainer's collapse WARNINGs) go to stderr.
    """
    logging.basicConfig(level=logging.INFO, format="%(levelname)s: %(message)s")
    try:
        return body()
    except Unim2Error as err:
        print(f"ERROR: {err}", file=sys.stderr)
        return 1
    except Interrupted as err:
        print(f"interrupted: {err}", file=sys.stderr)
        return 128 + err.signal_number
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
