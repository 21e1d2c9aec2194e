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

from unim2_core.backbone import load_backbone
from unim2_core.config import load_config
from unim2_core.distributed import init_from_environment, shutdown
from unim2_core.knn import cached_neighbours
from unim2_core.trainer import open_splits, prepare_caches

from .cli import add_config_arguments, run_cli


def main(argv: list[str] | None = None) -> int:
    """Parse arguments and extract every split's features for the config."""
    parser = argparse.ArgumentParser(prog="unim2_extract", description=__doc__.split("\n")[0])
    add_config_arguments(parser)
    parser.add_argument("--no-progress", action="store_true", help="hide progress bars")
    args = parser.parse_args(argv)

    def body() -> int:
        config = load_config(args.config, args.overrides)
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
