"""Optional trackers: off is a no-op, on but not installed is a clear error, adapters forward.

Neither tensorboard nor wandb is installed here. The adapters are driven through stand-in
modules that record calls, following the documented APIs: ``SummaryWriter(log_dir=...)``,
``add_scalar(tag, scalar_value, global_step=...)``, ``flush()``, ``close()`` and
``wandb.init(project=, dir=, name=, config=)`` -> run with ``log(data, step=)``, ``finish()``.
"""

from __future__ import annotations

import sys
import types
from pathlib import Path
from typing import Any

import pytest

from unim2_core.errors import TrainingError
from unim2_core.training.config import LoggingSection
from unim2_core.training.tracking import (
    FanOutTracker,
    NullTracker,
    TensorBoardTracker,
    WandbTracker,
    numeric_metrics,
    open_tracker,
)


class _Calls:
    def __init__(self) -> None:
        self.calls: list[tuple[Any, ...]] = []


def _fake_tensorboard(monkeypatch: pytest.MonkeyPatch) -> _Calls:
    record = _Calls()

    class SummaryWriter:
        def __init__(self, log_dir: str) -> None:
            record.calls.append(("init", log_dir))

        def add_scalar(self, tag: str, scalar_value: float, global_step: int) -> None:
            record.calls.append(("add_scalar", tag, scalar_value, global_step))

        def flush(self) -> None:
            record.calls.append(("flush",))

        def close(self) -> None:
            record.calls.append(("close",))

    module = types.ModuleType("torch.utils.tensorboard")
    module.SummaryWriter = SummaryWriter  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", module)
    return record


def _fake_wandb(monkeypatch: pytest.MonkeyPatch, *, fail_finish: bool = False) -> _Calls:
    record = _Calls()

    class Run:
        def log(self, data: dict[str, float], step: int) -> None:
            record.calls.append(("log", dict(data), step))

        def finish(self) -> None:
            record.calls.append(("finish",))
            if fail_finish:
                raise RuntimeError("upload failed")

    def init(*, project: str, dir: str, name: str, config: dict[str, Any]) -> Run:
        record.calls.append(("init", project, dir, name, config))
        return Run()

    module = types.ModuleType("wandb")
    module.init = init  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "wandb", module)
    return record


def _not_installed(monkeypatch: pytest.MonkeyPatch, *names: str) -> None:
    for name in names:
        monkeypatch.setitem(sys.modules, name, None)  # makes ``import name`` raise ImportError


def test_switched_off_tracker_is_a_no_op(tmp_path: Path) -> None:
    tracker = open_tracker(LoggingSection(), tmp_path, {})
    assert isinstance(tracker, NullTracker)
    tracker.log(1, {"loss": 0.5, "steps": 3})
    tracker.close()
    assert list(tmp_path.iterdir()) == []


def test_tracker_rejects_non_numeric_values(tmp_path: Path) -> None:
    with pytest.raises(TypeError, match="metric 'split' must be a number"):
        open_tracker(LoggingSection(), tmp_path, {}).log(1, {"split": "val"})  # type: ignore[dict-item]


@pytest.mark.parametrize(
    ("section", "package", "hidden"),
    [
        (
            LoggingSection(tensorboard=True),
            "tensorboard",
            ("tensorboard", "torch.utils.tensorboard"),
        ),
        (LoggingSection(wandb=True), "wandb", ("wandb",)),
    ],
)
def test_switched_on_but_missing_package_names_what_to_install(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    section: LoggingSection,
    package: str,
    hidden: tuple[str, ...],
) -> None:
    _not_installed(monkeypatch, *hidden)
    with pytest.raises(TrainingError, match=f"not installed: pip install {package}"):
        open_tracker(section, tmp_path, {})


def test_missing_tensorboard_fails_before_wandb_starts(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _not_installed(monkeypatch, "tensorboard", "torch.utils.tensorboard")
    wandb = _fake_wandb(monkeypatch)
    with pytest.raises(TrainingError, match=r"logging\.tensorboard"):
        open_tracker(LoggingSection(tensorboard=True, wandb=True), tmp_path, {})
    assert wandb.calls == []


def test_tensorboard_tracker_writes_scalars_under_the_run(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls = _fake_tensorboard(monkeypatch)
    tracker = open_tracker(LoggingSection(tensorboard=True), tmp_path, {})
    assert isinstance(tracker, TensorBoardTracker)
    tracker.log(10, {"train/loss": -0.5, "val/miou": 30})
    tracker.close()
    assert calls.calls == [
        ("init", str(tmp_path / "tensorboard")),
        ("add_scalar", "train/loss", -0.5, 10),
        ("add_scalar", "val/miou", 30.0, 10),
        ("flush",),
        ("close",),
    ]


def test_wandb_tracker_starts_a_run_with_the_config(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls = _fake_wandb(monkeypatch)
    run_dir = tmp_path / "run-7"
    section = LoggingSection(wandb=True, wandb_project="robots")
    tracker = open_tracker(section, run_dir, {"train": {"lr": 0.1}})
    assert isinstance(tracker, WandbTracker)
    tracker.log(3, {"loss": 1})
    tracker.close()
    assert calls.calls == [
        ("init", "robots", str(run_dir), "run-7", {"train": {"lr": 0.1}}),
        ("log", {"loss": 1.0}, 3),
        ("finish",),
    ]


def test_both_trackers_receive_every_record_and_are_all_closed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    board = _fake_tensorboard(monkeypatch)
    wandb = _fake_wandb(monkeypatch, fail_finish=True)
    tracker = open_tracker(LoggingSection(tensorboard=True, wandb=True), tmp_path, {})
    assert isinstance(tracker, FanOutTracker)
    tracker.log(5, {"loss": 2.0})
    with pytest.raises(RuntimeError, match="upload failed"):
        tracker.close()
    assert ("add_scalar", "loss", 2.0, 5) in board.calls
    assert ("close",) in board.calls  # closed although the W&B run failed to finish
    assert ("log", {"loss": 2.0}, 5) in wandb.calls


def test_numeric_metrics_keeps_numbers_and_prefixes_them() -> None:
    record = {"kind": "val", "step": 30, "split": "val", "miou": 20.5, "accuracy": 51, "ok": True}
    assert numeric_metrics(record, prefix="val/") == {"val/miou": 20.5, "val/accuracy": 51.0}
