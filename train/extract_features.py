"""``unim2_extract``: fill the feature caches of a config, optionally sharded with torchrun.

    unim2_extract --config config/train_nyu.yaml
    torchrun --nproc_per_node=4 -m unim2_train.extract_features --config config/train_nyu.yaml

Training reuses these caches; running this first only spreads the backbone work over several
processes or GPUs.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch.distributed as dist

from unim2_core.cli import (
    add_config_arguments,
    add_device_argument,
    add_progress_argument,
    config_overrides,
    run_cli,
)
from unim2_core.model.backbone import load_backbone
from unim2_core.training.config import load_config
from unim2_core.training.distributed import init_from_environment, shutdown
from unim2_core.training.knn import cached_neighbours
from unim2_core.training.trainer import open_splits, prepare_caches


def main(argv: list[str] | None = None) -> int:
    """Parse arguments and extract every split's features for the config."""
    parser = argparse.ArgumentParser(
        prog="unim2_extract",
        description="Fill the feature caches of a config, optionally sharded with torchrun "
        "(torchrun --nproc_per_node=N -m unim2_train.extract_features ...).",
    )
    add_config_arguments(parser)
    add_device_argument(parser)
    add_progress_argument(parser)
    args = parser.parse_args(argv)

    def body() -> int:
        config = load_config(args.config, config_overrides(args))
        context = init_from_environment(config.train.device)
        try:
            backbone = load_backbone(
                config.backbone.name,
                config.backbone.weights,
                feature_layer=config.backbone.feature_layer,
            ).to(context.device)
            cache_root = Path(config.cache_dir or Path(config.output_dir) / "cache")
            stores = prepare_caches(
                config,
                open_splits(config),
                backbone,
                device=context.device,
                cache_root=cache_root,
                progress=not args.no_progress,
            )
            if context.rank == 0:
                plan = cached_neighbours(
                    stores.train,
                    keep=config.loss.knn_keep,
                    draw=config.loss.knn_neighbours,
                    candidates=config.loss.knn_candidates,
                )
                print(plan.describe())
                for store in (stores.train, stores.selection, stores.test):
                    if store is not None:
                        print(f"{store.path}: {store.n_views} views")
            if dist.is_initialized():
                dist.barrier()
        finally:
            shutdown()
        return 0

    return run_cli(body)


if __name__ == "__main__":
    raise SystemExit(main())
