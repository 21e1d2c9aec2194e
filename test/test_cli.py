"""The shared command-line plumbing: argument types and the exit convention of ``run_cli``."""

from __future__ import annotations

import argparse
import functools
import math
import signal

import pytest

from unim2_core.cli import positive_float, positive_int, run_cli
from unim2_core.errors import ConfigError, Interrupted


@pytest.mark.parametrize(("text", "value"), [("1", 1), ("12", 12)])
def test_positive_int_accepts_counts(text: str, value: int) -> None:
    assert positive_int(text) == value


@pytest.mark.parametrize(
    ("text", "message"),
    [("0", "must be >= 1, got 0"), ("-3", "must be >= 1, got -3"), ("1.5", "expected an integer")],
)
def test_positive_int_refuses_what_is_not_a_count(text: str, message: str) -> None:
    with pytest.raises(argparse.ArgumentTypeError, match=message):
        positive_int(text)


@pytest.mark.parametrize(("text", "value"), [("0.05", 0.05), ("3", 3.0)])
def test_positive_float_accepts_positive_numbers(text: str, value: float) -> None:
    assert positive_float(text) == value


@pytest.mark.parametrize("text", ["0", "-1", "nan", "inf"])
def test_positive_float_refuses_zero_negative_and_non_finite(text: str) -> None:
    with pytest.raises(argparse.ArgumentTypeError, match=f"finite number > 0, got {text}$"):
        positive_float(text)


def test_positive_float_with_allow_inf_takes_infinity_but_not_nan() -> None:
    unbounded = functools.partial(positive_float, allow_inf=True)
    assert math.isinf(unbounded("inf"))
    with pytest.raises(argparse.ArgumentTypeError, match="must be a number > 0, got nan"):
        unbounded("nan")
    with pytest.raises(argparse.ArgumentTypeError, match="expected a number, got 'x'"):
        unbounded("x")


def _raise(err: BaseException) -> int:
    raise err


@pytest.mark.parametrize(
    ("err", "status", "line"),
    [
        (ConfigError("train.steps must be >= 1, got 0"), 1, "ERROR: train.steps must be >= 1"),
        (KeyboardInterrupt(), 130, "interrupted"),
        (Interrupted("at step 7", signal.SIGTERM), 143, "interrupted: at step 7"),
    ],
)
def test_run_cli_turns_errors_and_interrupts_into_one_line_and_a_status(
    err: BaseException, status: int, line: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert run_cli(lambda: _raise(err)) == status
    assert capsys.readouterr().err.startswith(line)
