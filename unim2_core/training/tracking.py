"""Optional experiment trackers: TensorBoard and Weights & Biases, switched on in the config.

``metrics.jsonl`` is always written by the trainer; trackers only mirror it. Neither package is a
dependency: a tracker that is switched on (``logging.tensorboard`` / ``logging.wandb``) but not
installed is an error at start, naming the package to install, rather than a run that silently
logs nothing. Switched off, :func:`open_tracker` returns a tracker that does nothing.

Weights & Biases reads its own environment (``WANDB_MODE=offline`` keeps the run on disk under
``<run_dir>/wandb`` for a later ``wandb sync``; ``WANDB_API_KEY`` for online runs).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol

from unim2_core.errors import TrainingError
from unim2_core.training.config import LoggingSection

TENSORBOARD_DIR = "tensorboard"


class Tracker(Protocol):
    """Receives scalar metrics during training."""

    def log(self, step: int, metrics: Mapping[str, float]) -> None:
        """Record ``metrics`` (name -> number) at training step ``step``."""

    def close(self) -> None:
        """Flush and release the tracker."""


def _check_metrics(metrics: Mapping[str, float]) -> dict[str, float]:
    """Metrics as floats; a value that is not a real number is a TypeError naming its key."""
    out = {}
    for key, value in metrics.items():
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise TypeError(f"metric {key!r} must be a number, got {value!r}")
        out[key] = float(value)
    return out


class NullTracker:
    """The tracker of a run with every tracker switched off: checks values, records nothing."""

    def log(self, step: int, metrics: Mapping[str, float]) -> None:
        """Check the values and drop them."""
        _check_metrics(metrics)

    def close(self) -> None:
        """Nothing to release."""


class TensorBoardTracker:
    """Scalars to TensorBoard event files in ``<run_dir>/tensorboard``."""

    def __init__(self, writer_class: Any, log_dir: Path) -> None:
        self.log_dir = log_dir
        self._writer = writer_class(log_dir=str(log_dir))

    def log(self, step: int, metrics: Mapping[str, float]) -> None:
        """One ``add_scalar`` per metric (NaN and infinities are recorded as they are)."""
        for key, value in _check_metrics(metrics).items():
            self._writer.add_scalar(key, value, global_step=step)

    def close(self) -> None:
        """Flush the event file and close it."""
        self._writer.flush()
        self._writer.close()


class WandbTracker:
    """Scalars to a Weights & Biases run (online or offline, as ``WANDB_MODE`` says)."""

    def __init__(self, wandb: Any, *, project: str, run_dir: Path, config: Mapping[str, Any]):
        self._run = wandb.init(
            project=project, dir=str(run_dir), name=run_dir.name, config=dict(config)
        )

    def log(self, step: int, metrics: Mapping[str, float]) -> None:
        """One ``run.log`` call per step; non-finite values are sent as they are."""
        self._run.log(_check_metrics(metrics), step=step)

    def close(self) -> None:
        """Finish the run (an offline run is then complete on disk)."""
        self._run.finish()


class FanOutTracker:
    """Several trackers at once, closed in reverse order of opening."""

    def __init__(self, trackers: Sequence[Tracker]) -> None:
        self.trackers = tuple(trackers)

    def log(self, step: int, metrics: Mapping[str, float]) -> None:
        """Forward to every tracker."""
        for tracker in self.trackers:
            tracker.log(step, metrics)

    def close(self) -> None:
        """Close every tracker, even when one of them fails (the first error is raised)."""
        error: BaseException | None = None
        for tracker in reversed(self.trackers):
            try:
                tracker.close()
            except Exception as err:  # every tracker must get its close call
                error = error or err
        if error is not None:
            raise error


def _missing(package: str, key: str) -> TrainingError:
    return TrainingError(
        f"config key {key!r} is true but the {package!r} package is not installed: "
        f"pip install {package} (or set {key}: false)"
    )


def _import_tensorboard_writer() -> Any:
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError as err:
        raise _missing("tensorboard", "logging.tensorboard") from err
    return SummaryWriter


def _import_wandb() -> Any:
    try:
        import wandb
    except ImportError as err:
        raise _missing("wandb", "logging.wandb") from err
    return wandb


def open_tracker(
    logging: LoggingSection, run_dir: str | Path, run_config: Mapping[str, Any]
) -> Tracker:
    """Open the trackers the config switches on (a no-op tracker when none is).

    Every requested package is imported before any tracker is opened, so a missing one fails
    before anything is created.

    Args:
        logging: The config's ``logging`` section.
        run_dir: The run's output folder (TensorBoard events go to ``<run_dir>/tensorboard``,
            W&B files to ``<run_dir>/wandb``).
        run_config: The run's config as plain types, stored with the W&B run.

    Raises:
        TrainingError: a switched-on tracker's package is not installed (the message names the
            package to ``pip install``).
    """
    run_dir = Path(run_dir)
    writer_class = _import_tensorboard_writer() if logging.tensorboard else None
    wandb = _import_wandb() if logging.wandb else None
    trackers: list[Tracker] = []
    if writer_class is not None:
        trackers.append(TensorBoardTracker(writer_class, run_dir / TENSORBOARD_DIR))
    if wandb is not None:
        try:
            trackers.append(
                WandbTracker(
                    wandb, project=logging.wandb_project, run_dir=run_dir, config=run_config
                )
            )
        except BaseException:
            for tracker in trackers:
                tracker.close()
            raise
    if not trackers:
        return NullTracker()
    if len(trackers) == 1:
        return trackers[0]
    return FanOutTracker(trackers)


def numeric_metrics(record: Mapping[str, Any], *, prefix: str = "") -> dict[str, float]:
    """The numeric entries of a ``metrics.jsonl`` record, keys prefixed, for :meth:`Tracker.log`.

    ``step`` and the text fields (``kind``, ``split``) are left out, e.g.
    ``tracker.log(step, numeric_metrics(val_record, prefix="val/"))``.
    """
    return {
        f"{prefix}{key}": float(value)
        for key, value in record.items()
        if key != "step" and isinstance(value, (int, float)) and not isinstance(value, bool)
    }
