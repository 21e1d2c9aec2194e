"""Label-free model selection: how well each unsupervised criterion tracks labelled mIoU.

    python -m benchmarks.label_free_selection [--rooms 8] [--frames-per-room 6] [--steps 200]
        [--val-every 20] [--crop 112] [--batch 16] [--points 11] [--runs a,b,...]
        [--workdir runs/bench-label-free]

Renders a labelled synthetic world (``unim2_demo.synthetic_scenes``: ``--rooms`` rooms of
``--frames-per-room`` RGB-D frames, 8 classes), then trains a few short runs with the demo's
configs (UniM2 RGB-D with seeds 0 and 1, naive fusion, RGB-only, and UniM2 at a 10x learning
rate), validating every ``--val-every`` steps on a held-out quarter of the frames. Every
validation logs the Hungarian mIoU *and* every label-free criterion of
``unim2_core.training.label_free`` on the same views, so each checkpoint is a (criterion, mIoU)
point.

Prints, for each criterion (sign turned so that higher is better):

- Spearman rank correlation with mIoU over all checkpoints of all runs (pooled), and the mean
  of the per-run correlations;
- the mean regret of selecting with it: best mIoU of the run minus the mIoU of the checkpoint
  the criterion picks (the "last step" rule is printed for comparison);
- each run's cluster health at its last step (largest cluster share, k-means reference).
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
from pathlib import Path
from typing import Any

import torch
from scipy.stats import spearmanr

from benchmarks.common import machine
from unim2_core.data.datasets.base import FrameGroup
from unim2_core.data.datasets.folder import write_frame_group
from unim2_core.training.config import parse_config
from unim2_core.training.label_free import CRITERIA, HIGHER_IS_BETTER
from unim2_core.training.trainer import Trainer
from unim2_demo.experiment import DemoSettings, training_config
from unim2_demo.synthetic_scenes import CLASS_NAMES, PALETTE, generate_sequence

RUNS: dict[str, dict[str, Any]] = {
    "unim2_s0": {"depth": True},
    "unim2_s1": {"depth": True, "seed": 1},
    "naive": {"depth": True, "align": "none"},
    "rgb_only": {"depth": False},
    "unim2_lr10x": {"depth": True, "lr_scale": 10.0},
}


def write_world(root: Path, rooms: int, frames_per_room: int) -> Path:
    """The labelled synthetic world in the folder layout (skipped when already written)."""
    if (root / "dataset.yaml").is_file():
        return root
    for index, frame in enumerate(
        generate_sequence(rooms * frames_per_room, seed=5, frames_per_room=frames_per_room, fps=1.0)
    ):
        group = FrameGroup(
            f"{index:04d}", {"rgb": frame.rgb, "depth": frame.depth_mm}, frame.labels
        )
        write_frame_group(root, group)
    (root / "dataset.yaml").write_text(
        json.dumps({"class_names": list(CLASS_NAMES), "palette": PALETTE.tolist()})
    )
    return root


def run(
    name: str, options: dict[str, Any], args: argparse.Namespace, root: Path
) -> list[dict[str, Any]]:
    """Train one run (resuming if done) and return its validation records."""
    settings = DemoSettings(
        crop_size=args.crop,
        steps=args.steps,
        val_every=args.val_every,
        batch_size=args.batch,
        points=args.points,
    )
    raw = training_config(
        settings,
        data_root=root,
        output_dir=args.workdir / name,
        cache_dir=args.workdir / "cache",
        depth=options["depth"],
    )
    raw["dataset"]["holdout_fraction"] = 0.25
    raw["train"]["device"] = "cpu"
    raw["train"]["seed"] = options.get("seed", 0)
    raw["train"]["lr"] = raw["train"]["lr"] * options.get("lr_scale", 1.0)
    if "align" in options:
        raw["model"]["align"] = options["align"]
    Trainer(parse_config(raw), progress=False).run()
    lines = (args.workdir / name / "metrics.jsonl").read_text().splitlines()
    return [r for r in map(json.loads, lines) if r["kind"] == "val"]


def oriented(record: dict[str, Any], criterion: str) -> float:
    """The criterion's value with its sign turned so that higher is better."""
    value = float(record[f"criterion/{criterion}"])
    return value if HIGHER_IS_BETTER[criterion] else -value  # type: ignore[index]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rooms", type=int, default=8)
    parser.add_argument("--frames-per-room", type=int, default=6)
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--val-every", type=int, default=20)
    parser.add_argument("--crop", type=int, default=112)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--points", type=int, default=11)
    parser.add_argument("--runs", default=",".join(RUNS), help=f"subset of {','.join(RUNS)}")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--workdir", type=Path, default=Path("runs/bench-label-free"))
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(f"machine: {machine()}")
    root = write_world(args.workdir / "world", args.rooms, args.frames_per_room)
    chosen = [name.strip() for name in args.runs.split(",") if name.strip()]
    runs = {name: run(name, RUNS[name], args, root) for name in chosen}
    everything = [r for records in runs.values() for r in records]
    print(
        f"\n{len(runs)} runs x {len(everything) // len(runs)} checkpoints, "
        f"{args.rooms * args.frames_per_room} frames (selection: a held-out quarter), "
        f"crop {args.crop}, {args.steps} steps of batch {args.batch}, {args.points}^2 points\n"
    )
    print("| criterion | Spearman vs mIoU (pooled) | mean per-run Spearman | mean regret (mIoU) |")
    print("|---|---|---|---|")
    for criterion in CRITERIA:
        pooled = spearmanr(
            [oriented(r, criterion) for r in everything], [r["miou"] for r in everything]
        ).statistic
        per_run, regrets = [], []
        for records in runs.values():
            values = [oriented(r, criterion) for r in records]
            mious = [r["miou"] for r in records]
            rho = spearmanr(values, mious).statistic
            if not math.isnan(rho):
                per_run.append(rho)
            picked = max(range(len(records)), key=lambda i: values[i])
            regrets.append(max(mious) - mious[picked])
        mean_rho = statistics.mean(per_run) if per_run else math.nan
        print(f"| {criterion} | {pooled:+.2f} | {mean_rho:+.2f} | {statistics.mean(regrets):.2f} |")
    last = statistics.mean(max(r["miou"] for r in rs) - rs[-1]["miou"] for rs in runs.values())
    print(f"| (last step) | - | - | {last:.2f} |")
    print(
        "\n| run | best mIoU | last mIoU | largest cluster (last) | k-means largest | collapsed |"
    )
    print("|---|---|---|---|---|---|")
    for name, records in runs.items():
        end = records[-1]
        print(
            f"| {name} | {max(r['miou'] for r in records):.1f} | {end['miou']:.1f} | "
            f"{100 * end['health/largest_cluster_share']:.0f}% | "
            f"{100 * end['health/kmeans_largest_cluster_share']:.0f}% | "
            f"{end['health/collapsed']} |"
        )


if __name__ == "__main__":
    main()
