"""Hyperparameter search: Optuna TPE over the CMCS loss settings, with pruning, in a database.

Searched (design.md §3): every modality's three shifts and three pair weights and its modality
weight, each in [0, 1]; optionally the learning rate (log-uniform) and the code dimension
(categorical). Parameters are named by their dotted config keys
(``loss.modalities.rgb.shift.knn``, ``train.lr``, ``model.code_dim``), so a trial's values apply
to a config exactly as ``--set`` overrides would.

Objective: ``0.75 * mIoU + 0.25 * Acc`` of the selected heads on the SELECTION split (the
validation split, or a held-out share of train). A config that selects on test is refused: a
search tuned on test would report test numbers that are selection results. Trials never touch
the test split at all (their configs drop it). Every validation is reported to the pruner
(median rule by default), which may stop a trial early.

The study lives in a database: a SQLite file by default, or any SQLAlchemy URL (PostgreSQL,
MySQL) so that workers on several machines share one study; running again resumes it. A study
records the setup it was created with, and a worker with another setup (dataset, backbone,
steps, search space...) is refused instead of mixing incomparable trials. A trial whose
training fails (for example a non-finite loss) is marked FAIL by Optuna and the worker goes on;
it never scores 0. After every finished trial the best trial so far is written as a ready
config, ``best_config.yaml``.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import warnings
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, NamedTuple

import optuna
import yaml
from optuna.distributions import (
    BaseDistribution,
    CategoricalDistribution,
    FloatDistribution,
    distribution_to_json,
)
from optuna.trial import FrozenTrial, TrialState

from unim2_core.atomic import atomic_write_text
from unim2_core.errors import ConfigError, SearchError, TrainingError
from unim2_core.model.loss import PAIRS
from unim2_core.training.config import TrainConfig, config_to_dict, parse_config
from unim2_core.training.trainer import Trainer, open_splits

Tunable = Literal["lr", "code_dim"]
TUNABLES: tuple[Tunable, ...] = ("lr", "code_dim")
OBJECTIVE_WEIGHTS = (0.75, 0.25)
"""Weights of (mIoU, pixel accuracy) in the objective."""
DEFAULT_LR_RANGE = (1e-5, 1e-3)
DEFAULT_CODE_DIMS = (32, 64, 70, 90, 128, 256, 320)
BEST_CONFIG = "best_config.yaml"
STUDY_DB = "study.db"
SIGNATURE_ATTR = "unim2_signature"
HEARTBEAT_SECONDS = 60
"""A worker's running trial sends a heartbeat this often; trials of a killed worker are marked
FAIL by the next worker after twice this long without one."""

# Keys that may differ between workers of one study: where things are on each machine.
_MACHINE_KEYS = (
    "output_dir",
    "cache_dir",
    "logging",
    "dataset.root",
    "dataset.test_split",
    "backbone.weights",
    "train.device",
    "train.checkpoint_every",
)


def objective_value(miou: float, accuracy: float) -> float:
    """``0.75 * mIoU + 0.25 * Acc`` (both in percent)."""
    return OBJECTIVE_WEIGHTS[0] * miou + OBJECTIVE_WEIGHTS[1] * accuracy


@dataclass(frozen=True)
class SearchSpace:
    """What a search varies.

    Attributes:
        modalities: Modalities whose shifts, pair weights and modality weight are searched.
        tune: Extra parameters: ``lr`` (log-uniform in ``lr_range``) and/or ``code_dim``
            (one of ``code_dims``).
        lr_range: Learning-rate bounds.
        code_dims: Code dimension choices.
    """

    modalities: tuple[str, ...]
    tune: tuple[Tunable, ...] = ()
    lr_range: tuple[float, float] = DEFAULT_LR_RANGE
    code_dims: tuple[int, ...] = DEFAULT_CODE_DIMS

    def __post_init__(self) -> None:
        unknown = [t for t in self.tune if t not in TUNABLES]
        if unknown:
            raise ValueError(f"cannot tune {unknown}; tunable: {', '.join(TUNABLES)}")
        low, high = self.lr_range
        if not 0 < low < high:
            raise ValueError(f"lr_range must satisfy 0 < low < high, got {self.lr_range}")
        if not self.code_dims or any(d < 1 for d in self.code_dims):
            raise ValueError(f"code_dims must be positive integers, got {self.code_dims}")

    def distributions(self) -> dict[str, BaseDistribution]:
        """Parameter name (dotted config key) -> Optuna distribution."""
        space: dict[str, BaseDistribution] = {}
        for modality in self.modalities:
            for kind in ("shift", "weight"):
                for pair in PAIRS:
                    space[f"loss.modalities.{modality}.{kind}.{pair}"] = FloatDistribution(0, 1)
            space[f"loss.modalities.{modality}.modality_weight"] = FloatDistribution(0, 1)
        if "lr" in self.tune:
            space["train.lr"] = FloatDistribution(*self.lr_range, log=True)
        if "code_dim" in self.tune:
            space["model.code_dim"] = CategoricalDistribution(self.code_dims)
        return space

    def suggest(self, trial: optuna.Trial) -> dict[str, Any]:
        """Draw every parameter of the space for ``trial``."""
        values: dict[str, Any] = {}
        for name, distribution in self.distributions().items():
            if isinstance(distribution, FloatDistribution):
                values[name] = trial.suggest_float(
                    name, distribution.low, distribution.high, log=distribution.log
                )
            elif isinstance(distribution, CategoricalDistribution):
                values[name] = trial.suggest_categorical(name, distribution.choices)
        return values


def _set_path(data: dict[str, Any], dotted: str, value: Any) -> None:
    node = data
    *parents, leaf = dotted.split(".")
    for part in parents:
        node = node[part]
    node[leaf] = value


def _drop_path(data: dict[str, Any], dotted: str) -> None:
    node: Any = data
    *parents, leaf = dotted.split(".")
    for part in parents:
        node = node.get(part) if isinstance(node, dict) else None
    if isinstance(node, dict):
        node.pop(leaf, None)


def apply_params(config: TrainConfig, params: Mapping[str, Any]) -> TrainConfig:
    """The config with a trial's values (dotted config keys) set.

    Raises:
        SearchError: a parameter names no key of the config (a study of another setup).
    """
    data = config_to_dict(config)
    for name, value in params.items():
        try:
            _set_path(data, name, value)
        except (KeyError, TypeError) as err:
            raise SearchError(f"search parameter {name!r} is not a key of the config") from err
    try:
        return parse_config(data)
    except ConfigError as err:
        raise SearchError(f"the trial's values do not make a valid config: {err}") from err


def study_signature(config: TrainConfig, space: SearchSpace) -> dict[str, Any]:
    """What every worker of one study must share: the config without machine-specific keys and
    searched values, plus the search space."""
    data = config_to_dict(config)
    distributions = space.distributions()
    for key in (*_MACHINE_KEYS, *distributions):
        _drop_path(data, key)
    data["search_space"] = {name: distribution_to_json(d) for name, d in distributions.items()}
    plain: dict[str, Any] = json.loads(json.dumps(data))
    return plain


def _flatten(data: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(data, dict):
        out: dict[str, Any] = {}
        for key, value in data.items():
            out.update(_flatten(value, f"{prefix}{key}."))
        return out
    return {prefix.rstrip("."): data}


def _check_signature(study: optuna.Study, signature: dict[str, Any], storage_name: str) -> None:
    stored = study.user_attrs.get(SIGNATURE_ATTR)
    if stored is None:
        if study.trials:
            raise SearchError(
                f"study {study.study_name!r} in {storage_name} holds trials but was not created "
                "by unim2_search; choose another --study-name"
            )
        study.set_user_attr(SIGNATURE_ATTR, signature)
        return
    old, new = _flatten(stored), _flatten(signature)
    differing = sorted(k for k in old.keys() | new.keys() if old.get(k) != new.get(k))
    if differing:
        raise SearchError(
            f"study {study.study_name!r} in {storage_name} was created with another setup; "
            f"differing keys: {', '.join(differing[:8])}"
            + (f" (+{len(differing) - 8} more)" if len(differing) > 8 else "")
            + ". Use another --study-name, or the setup the study was created with"
        )


def display_url(url: str) -> str:
    """The storage URL with any password masked, for messages and logs."""
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    try:
        rendered: str = make_url(url).render_as_string(hide_password=True)
    except ArgumentError:  # not a URL at all: nothing to hide, opening it will fail
        return url
    return rendered


def open_study(
    storage: str,
    study_name: str,
    *,
    sampler: optuna.samplers.BaseSampler,
    pruner: optuna.pruners.BasePruner,
) -> optuna.Study:
    """Create or load a maximising study in an SQLAlchemy database.

    Raises:
        SearchError: the database cannot be opened (bad URL, missing driver, unreachable
            server), or the study there minimises.
    """
    shown = display_url(storage)
    from sqlalchemy.exc import SQLAlchemyError

    try:
        with warnings.catch_warnings():
            # Optuna flags the heartbeat as experimental; it is what lets one worker fail the
            # trials a killed worker left RUNNING.
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            database = optuna.storages.RDBStorage(
                storage, heartbeat_interval=HEARTBEAT_SECONDS, grace_period=2 * HEARTBEAT_SECONDS
            )
        study = optuna.create_study(
            storage=database,
            study_name=study_name,
            direction="maximize",
            sampler=sampler,
            pruner=pruner,
            load_if_exists=True,
        )
    except (SQLAlchemyError, ImportError, ValueError, OSError) as err:
        raise SearchError(f"cannot open study {study_name!r} in {shown}: {err}") from err
    if study.direction != optuna.study.StudyDirection.MAXIMIZE:
        raise SearchError(f"study {study_name!r} in {shown} minimises; unim2 studies maximise")
    return study


class SearchResult(NamedTuple):
    """Where a study stands after this worker's trials.

    Attributes:
        study_name: Study name.
        storage: Storage URL (password masked).
        n_trials: Trials in the study, all workers and states.
        completed: Completed trials.
        pruned: Pruned trials.
        failed: Failed trials.
        best_number: Number of the best trial, None when none completed.
        best_value: Its objective.
        best_params: Its parameter values.
        best_config: Path of ``best_config.yaml``, None when no trial completed.
    """

    study_name: str
    storage: str
    n_trials: int
    completed: int
    pruned: int
    failed: int
    best_number: int | None
    best_value: float | None
    best_params: dict[str, Any] | None
    best_config: Path | None


def write_best_config(
    study: optuna.Study, base: TrainConfig, path: Path, *, storage: str
) -> Path | None:
    """Write the study's best trial as a ready config (the base config with its values).

    Returns None (and writes nothing) when no trial has completed yet.
    """
    completed = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    if not completed:
        return None
    best = study.best_trial
    config = apply_params(base, best.params)
    selection = best.user_attrs.get("selection", {})
    header = [
        f"# Best trial {best.number} of study {study.study_name!r} ({display_url(storage)}),",
        f"# written {dt.datetime.now(dt.timezone.utc).isoformat(timespec='seconds')} after "
        f"{len(study.trials)} trials.",
        f"# Objective 0.75 mIoU + 0.25 Acc = {best.value:.4f} on split "
        f"{selection.get('split')!r} (mIoU {selection.get('miou', float('nan')):.2f}, "
        f"Acc {selection.get('accuracy', float('nan')):.2f}, step {selection.get('step')}).",
        f"# Train it: unim2_train --config {path.name}",
    ]
    text = "\n".join(header) + "\n" + yaml.safe_dump(config_to_dict(config), sort_keys=False)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, text)
    return path


def _trial_config(
    base: TrainConfig, params: Mapping[str, Any], *, output_dir: Path, cache_dir: Path
) -> TrainConfig:
    config = apply_params(base, params)
    return dataclasses.replace(
        config,
        output_dir=str(output_dir),
        cache_dir=str(cache_dir),
        dataset=dataclasses.replace(config.dataset, test_split=None),
    )


def check_searchable(config: TrainConfig) -> None:
    """Refuse a config the search cannot score honestly.

    Raises:
        SearchError: the config selects on the test split, or the selection split has no
            labels.
    """
    if config.train.selection_split == "test":
        raise SearchError(
            "the config selects on the test split (train.selection_split: test); a search "
            "would then tune hyperparameters on test and its best score would be a test-set "
            "selection result. Search on the validation split (set train.selection_split: "
            "val; without a val split a seeded share of train is held out)"
        )
    splits = open_splits(config)
    if splits.selection[0].labels is None:
        raise SearchError(
            f"the selection split {splits.selection_name!r} has no labels; the objective "
            "(0.75 mIoU + 0.25 Acc) needs labelled validation frames"
        )


def run_search(
    config: TrainConfig,
    *,
    out_dir: str | Path,
    n_trials: int,
    storage: str | None = None,
    study_name: str = "unim2",
    space: SearchSpace | None = None,
    seed: int | None = None,
    pruner: optuna.pruners.BasePruner | None = None,
    startup_trials: int = 10,
    progress: bool = False,
) -> SearchResult:
    """Run ``n_trials`` trials of a (new or resumed) study and write the best config.

    Args:
        config: Base config; trials vary its searched keys only.
        out_dir: Search folder: trial runs in ``<out_dir>/<study_name>/trial_NNNN``, features
            cached in ``cache_dir`` (default ``<out_dir>/cache``), ``best_config.yaml``.
        n_trials: Trials run by this worker.
        storage: SQLAlchemy URL of the study database (default
            ``sqlite:///<out_dir>/study.db``).
        study_name: Study name in the database.
        space: Search space (default: every modality's loss settings).
        seed: TPE seed (default ``train.seed``); this worker's sampler uses ``seed`` plus the
            number of trials already in the study, so a resumed study does not replay its first
            random trials. Concurrent workers need distinct seeds.
        pruner: Pruner (default: median rule after 5 trials).
        startup_trials: Random trials before TPE takes over.
        progress: Show the trainer's progress bars.

    Raises:
        SearchError: the config selects on test or has no labelled selection split, the
            study cannot be opened, or it was created with another setup.
        Unim2Error: bad input or cache problems stop the worker (that trial is marked FAIL).
    """
    if n_trials < 1:
        raise ValueError(f"n_trials must be >= 1, got {n_trials}")
    check_searchable(config)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    url = storage or f"sqlite:///{(out / STUDY_DB).resolve()}"
    space = space or SearchSpace(modalities=config.modality_names)
    missing = [m for m in space.modalities if m not in config.modalities]
    if missing:
        raise SearchError(f"search modalities {missing} are not in the config")
    cache_dir = Path(config.cache_dir) if config.cache_dir else out / "cache"
    base_seed = config.train.seed if seed is None else seed
    study = open_study(
        url,
        study_name,
        sampler=optuna.samplers.TPESampler(seed=base_seed, n_startup_trials=startup_trials),
        pruner=pruner or optuna.pruners.MedianPruner(n_startup_trials=5),
    )
    _check_signature(study, study_signature(config, space), display_url(url))
    study.sampler = optuna.samplers.TPESampler(
        seed=base_seed + len(study.trials), n_startup_trials=startup_trials
    )
    best_path = out / BEST_CONFIG

    def objective(trial: optuna.Trial) -> float:
        params = space.suggest(trial)
        run_dir = out / study_name / f"trial_{trial.number:04d}"
        trial.set_user_attr("output_dir", str(run_dir.resolve()))
        trial_config = _trial_config(config, params, output_dir=run_dir, cache_dir=cache_dir)

        def report(step: int, record: dict[str, Any]) -> None:
            value = objective_value(record["miou"], record["accuracy"])
            trial.report(value, step)
            if trial.should_prune():
                raise optuna.TrialPruned(f"pruned at step {step} (objective {value:.3f})")

        result = Trainer(trial_config, restart=True, progress=progress, val_hook=report).run()
        selection = result.metrics["selection"]
        if "miou" not in selection:
            raise SearchError(f"trial {trial.number} has no selection scores: {selection}")
        trial.set_user_attr("selection", selection)
        return objective_value(selection["miou"], selection["accuracy"])

    def after_trial(study: optuna.Study, trial: FrozenTrial) -> None:
        write_best_config(study, config, best_path, storage=url)

    study.optimize(objective, n_trials=n_trials, catch=(TrainingError,), callbacks=[after_trial])
    written = write_best_config(study, config, best_path, storage=url)
    trials = study.get_trials(deepcopy=False)
    states = [t.state for t in trials]
    best = study.best_trial if written is not None else None
    return SearchResult(
        study_name=study_name,
        storage=display_url(url),
        n_trials=len(trials),
        completed=states.count(TrialState.COMPLETE),
        pruned=states.count(TrialState.PRUNED),
        failed=states.count(TrialState.FAIL),
        best_number=None if best is None else best.number,
        best_value=None if best is None else best.value,
        best_params=None if best is None else dict(best.params),
        best_config=written,
    )


def format_result(result: SearchResult) -> str:
    """A short text summary of a search result."""
    lines = [
        f"study {result.study_name!r} in {result.storage}: {result.n_trials} trials "
        f"({result.completed} complete, {result.pruned} pruned, {result.failed} failed)",
    ]
    if result.best_number is None or result.best_value is None:
        lines.append("no trial has completed yet")
        return "\n".join(lines) + "\n"
    lines.append(f"best trial {result.best_number}: objective {result.best_value:.4f}")
    for name, value in (result.best_params or {}).items():
        lines.append(
            f"  {name} = {value:.6g}" if isinstance(value, float) else f"  {name} = {value}"
        )
    lines.append(f"best config: {result.best_config}")
    return "\n".join(lines) + "\n"
