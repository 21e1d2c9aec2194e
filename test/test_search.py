"""Search: real tiny studies in SQLite files: resume, best config, failed and pruned trials."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import optuna
import pytest
from optuna.distributions import CategoricalDistribution, FloatDistribution
from optuna.trial import TrialState
from tiny_setup import tiny_config, write_tiny_config, write_tiny_dataset

import unim2_core.training.search as search
from unim2_core.errors import SearchError, TrainingError
from unim2_core.training.config import TrainConfig, config_to_dict, load_config
from unim2_core.training.search import (
    SearchSpace,
    apply_params,
    display_url,
    objective_value,
    run_search,
)
from unim2_core.training.trainer import Trainer
from unim2_train.search import main

optuna.logging.set_verbosity(optuna.logging.WARNING)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    base = tmp_path_factory.mktemp("search")
    root = write_tiny_dataset(base / "data")
    cache = base / "cache"
    return {
        "base": base,
        "root": root,
        "cache": cache,
        "config": write_tiny_config(base / "cfg.yaml", root, base / "run", cache),
    }


def _config(tiny: dict[str, Path]) -> TrainConfig:
    return tiny_config(tiny["root"], tiny["base"] / "run", tiny["cache"])


def _study(out: Path, name: str = "unim2") -> optuna.Study:
    return optuna.load_study(study_name=name, storage=f"sqlite:///{out / 'study.db'}")


def test_objective_weights_miou_three_times_accuracy() -> None:
    assert objective_value(40.0, 60.0) == pytest.approx(45.0)


def test_search_space_covers_every_modality_and_optional_extras() -> None:
    space = SearchSpace(modalities=("rgb", "depth"), tune=("lr", "code_dim"), code_dims=(8, 16))
    distributions = space.distributions()
    assert len(distributions) == 2 * 7 + 2
    assert distributions["loss.modalities.depth.shift.knn"] == FloatDistribution(0, 1)
    assert distributions["loss.modalities.rgb.modality_weight"] == FloatDistribution(0, 1)
    assert distributions["train.lr"] == FloatDistribution(1e-5, 1e-3, log=True)
    assert distributions["model.code_dim"] == CategoricalDistribution((8, 16))
    assert len(SearchSpace(modalities=("rgb",)).distributions()) == 7


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"tune": ("dropout",)}, "cannot tune"),
        ({"lr_range": (1e-3, 1e-5)}, "0 < low < high"),
        ({"code_dims": ()}, "code_dims must be positive"),
    ],
)
def test_search_space_rejects_bad_settings(kwargs: dict[str, Any], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        SearchSpace(modalities=("rgb",), **kwargs)


def test_apply_params_sets_dotted_config_keys(tiny: dict[str, Path]) -> None:
    params = {"loss.modalities.depth.weight.rand": 0.25, "train.lr": 1e-4, "model.code_dim": 8}
    config = apply_params(_config(tiny), params)
    assert config.loss.modalities["depth"].weight.rand == 0.25
    assert (config.train.lr, config.model.code_dim) == (1e-4, 8)
    with pytest.raises(SearchError, match=r"'loss\.modalities\.nir\.shift\.self' is not a key"):
        apply_params(_config(tiny), {"loss.modalities.nir.shift.self": 0.1})


def test_search_refuses_a_config_that_selects_on_test(tiny: dict[str, Path]) -> None:
    config = _config(tiny)
    config = dataclasses.replace(
        config, train=dataclasses.replace(config.train, selection_split="test")
    )
    with pytest.raises(SearchError, match="selects on the test split"):
        run_search(config, out_dir=tiny["base"] / "never", n_trials=1)
    assert not (tiny["base"] / "never").exists()


def test_display_url_masks_passwords() -> None:
    assert display_url("postgresql://me:secret@db/unim2") == "postgresql://me:***@db/unim2"


def test_unopenable_storage_is_a_search_error(tiny: dict[str, Path]) -> None:
    with pytest.raises(SearchError, match="cannot open study 'unim2' in nosuchdb://x"):
        run_search(_config(tiny), out_dir=tiny["base"] / "bad", n_trials=1, storage="nosuchdb://x")


def test_study_runs_resumes_and_writes_the_best_config(
    tiny: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    out = tiny["base"] / "study"
    result = run_search(_config(tiny), out_dir=out, n_trials=2, seed=0)
    assert (result.n_trials, result.completed, result.pruned, result.failed) == (2, 2, 0, 0)
    study = _study(out)
    best = study.best_trial
    assert result.best_number == best.number and result.best_value == best.value
    selection = best.user_attrs["selection"]
    assert selection["split"] == "val"
    assert best.value == pytest.approx(objective_value(selection["miou"], selection["accuracy"]))
    for trial in study.trials:  # every trial trained in its own folder, never touching test
        metrics = (Path(trial.user_attrs["output_dir"]) / "metrics.json").read_text()
        assert '"test"' not in metrics
        assert sorted(trial.intermediate_values) == [3, 6]

    best_config = load_config(out / "best_config.yaml")
    plain = config_to_dict(best_config)
    assert len(best.params) == 14
    for name, value in best.params.items():
        node = plain
        for part in name.split("."):
            node = node[part]
        assert node == pytest.approx(value), name
    base = _config(tiny)
    assert best_config.output_dir == base.output_dir  # the base config otherwise
    assert best_config.dataset.test_split == "test"
    header = (out / "best_config.yaml").read_text().splitlines()[0]
    assert header.startswith(f"# Best trial {best.number} of study 'unim2'")

    # a second worker call adds trials to the same study, with new suggestions
    argv = ["--config", str(tiny["config"]), "--out", str(out), "--trials", "1", "--seed", "0"]
    assert main(argv) == 0
    study = _study(out)
    assert len(study.trials) == 3
    assert study.trials[2].params != study.trials[0].params
    printed = capsys.readouterr().out
    assert "3 trials (3 complete, 0 pruned, 0 failed)" in printed
    assert f"best config: {out / 'best_config.yaml'}" in printed


def test_a_worker_with_another_setup_is_refused(
    tiny: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    out = tiny["base"] / "guarded"
    run_search(_config(tiny), out_dir=out, n_trials=1)
    argv = ["--config", str(tiny["config"]), "--out", str(out), "--set", "train.steps=3"]
    assert main(argv) == 1
    err = capsys.readouterr().err
    assert "ERROR: study 'unim2'" in err and "differing keys: train.steps" in err
    assert main([*argv[:4], "--tune", "lr"]) == 1
    assert "search_space.train.lr" in capsys.readouterr().err
    assert len(_study(out).trials) == 1


def test_a_trial_whose_training_fails_is_marked_fail_and_the_worker_goes_on(
    tiny: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    calls = []

    class FailingOnce(Trainer):
        def run(self) -> Any:
            calls.append(self.config.output_dir)
            if len(calls) == 1:
                raise TrainingError("loss became nan at step 2")
            return super().run()

    monkeypatch.setattr(search, "Trainer", FailingOnce)
    out = tiny["base"] / "failing"
    result = run_search(_config(tiny), out_dir=out, n_trials=2)
    trials = _study(out).trials
    assert [t.state for t in trials] == [TrialState.FAIL, TrialState.COMPLETE]
    assert trials[0].value is None  # failed, not scored 0
    assert (result.failed, result.completed, result.best_number) == (1, 1, 1)


def test_pruning_stops_a_trial_at_its_first_report(tiny: dict[str, Path]) -> None:
    out = tiny["base"] / "pruned"
    pruner = optuna.pruners.ThresholdPruner(lower=1e9)  # any score is below: prune at once
    result = run_search(_config(tiny), out_dir=out, n_trials=1, pruner=pruner)
    (trial,) = _study(out).trials
    assert trial.state == TrialState.PRUNED
    assert list(trial.intermediate_values) == [3]
    assert not (Path(trial.user_attrs["output_dir"]) / "model.unim2.pt").exists()
    assert (result.pruned, result.best_config) == (1, None)
    assert not (out / "best_config.yaml").exists()


def test_cli_fails_when_no_trial_completed(
    tiny: dict[str, Path], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    class AlwaysFailing(Trainer):
        def run(self) -> Any:
            raise TrainingError("loss became inf at step 1")

    monkeypatch.setattr(search, "Trainer", AlwaysFailing)
    argv = ["--config", str(tiny["config"]), "--out", str(tiny["base"] / "nothing")]
    assert main([*argv, "--trials", "1"]) == 1
    captured = capsys.readouterr()
    assert "1 trials (0 complete, 0 pruned, 1 failed)" in captured.out
    assert "ERROR: no trial of study 'unim2' has completed yet" in captured.err
