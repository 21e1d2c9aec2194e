"""``unim2_search``: Optuna TPE search of the CMCS loss settings; resumable, shareable.

Examples::

    unim2_search --config config/train_nyu.yaml --trials 40
    unim2_search --config config/train_nyu.yaml --trials 20 --tune lr,code_dim \\
        --storage postgresql://user@db-host/unim2 --study-name nyu-vits --seed 1

Run the same command again (or on other machines with the same ``--storage`` and
``--study-name``) to add trials to the same study; give concurrent workers distinct ``--seed``.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import cast

import optuna

from unim2_core.cli import (
    add_config_arguments,
    add_device_argument,
    add_progress_argument,
    config_overrides,
    run_cli,
)
from unim2_core.errors import ConfigError, SearchError
from unim2_core.training.config import load_config
from unim2_core.training.search import (
    DEFAULT_CODE_DIMS,
    DEFAULT_LR_RANGE,
    TUNABLES,
    SearchSpace,
    Tunable,
    format_result,
    run_search,
)


def _csv(text: str, flag: str) -> list[str]:
    items = [item.strip() for item in text.split(",") if item.strip()]
    if not items:
        raise ConfigError(f"{flag} {text!r} names nothing")
    return items


def _space(args: argparse.Namespace, modalities: tuple[str, ...]) -> SearchSpace:
    tune = _csv(args.tune, "--tune") if args.tune else []
    unknown = [t for t in tune if t not in TUNABLES]
    if unknown:
        raise ConfigError(f"--tune {args.tune!r}: cannot tune {unknown}; choose from {TUNABLES}")
    try:
        low, high = (float(v) for v in _csv(args.lr_range, "--lr-range"))
        code_dims = tuple(int(v) for v in _csv(args.code_dims, "--code-dims"))
        return SearchSpace(
            modalities=modalities,
            tune=tuple(cast(list[Tunable], tune)),
            lr_range=(low, high),
            code_dims=code_dims,
        )
    except ValueError as err:
        raise ConfigError(f"bad search range: {err}") from err


def main(argv: list[str] | None = None) -> int:
    """Parse arguments, run this worker's trials, print the study's best trial."""
    parser = argparse.ArgumentParser(
        prog="unim2_search",
        description="Bayesian (TPE) search of every modality's shifts, pair weights and "
        "modality weight (optionally lr and code dimension), maximising 0.75 mIoU + 0.25 Acc "
        "on the selection (validation) split, with pruning. The study is kept in a database "
        "and resumed when run again; the best trial is written as best_config.yaml.",
    )
    add_config_arguments(parser)
    parser.add_argument("--trials", type=int, default=20, help="trials run by this worker")
    parser.add_argument("--out", help="search folder (default: <output_dir>/search)")
    parser.add_argument(
        "--storage",
        help="SQLAlchemy URL of the study database (default: sqlite:///<out>/study.db)",
    )
    parser.add_argument("--study-name", default="unim2", help="study name (default unim2)")
    parser.add_argument("--tune", help=f"also search these, comma-separated: {','.join(TUNABLES)}")
    parser.add_argument(
        "--lr-range",
        default=",".join(f"{v:g}" for v in DEFAULT_LR_RANGE),
        help="log-uniform learning-rate bounds LOW,HIGH (with --tune lr)",
    )
    parser.add_argument(
        "--code-dims",
        default=",".join(str(v) for v in DEFAULT_CODE_DIMS),
        help="code dimension choices (with --tune code_dim)",
    )
    parser.add_argument("--seed", type=int, help="sampler seed (default: train.seed)")
    parser.add_argument(
        "--startup-trials", type=int, default=10, help="random trials before TPE (default 10)"
    )
    parser.add_argument("--no-prune", action="store_true", help="never stop a trial early")
    add_device_argument(parser)
    add_progress_argument(parser)
    parser.add_argument("--progress", action="store_true", help=argparse.SUPPRESS)  # deprecated
    args = parser.parse_args(argv)
    if args.trials < 1:
        parser.error("--trials must be >= 1")

    def body() -> int:
        config = load_config(args.config, config_overrides(args))
        out = Path(args.out) if args.out else Path(config.output_dir) / "search"
        result = run_search(
            config,
            out_dir=out,
            n_trials=args.trials,
            storage=args.storage,
            study_name=args.study_name,
            space=_space(args, config.modality_names),
            seed=args.seed,
            pruner=optuna.pruners.NopPruner() if args.no_prune else None,
            startup_trials=args.startup_trials,
            progress=not args.no_progress,
        )
        print(format_result(result), end="")
        if result.best_number is None:
            raise SearchError(
                f"no trial of study {result.study_name!r} has completed yet; run more trials"
            )
        return 0

    return run_cli(body)


if __name__ == "__main__":
    raise SystemExit(main())
