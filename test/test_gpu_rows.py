"""benchmarks/gpu_rows.py: the dry run works on the CPU, the table and the verdict say the truth."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from benchmarks.gpu_rows import Row, main, table, verdict

REPO = Path(__file__).resolve().parents[1]
DRY_RUN = [sys.executable, "-m", "benchmarks.gpu_rows", "--device", "cpu", "--quick"]


def test_cpu_dry_run_prints_a_row_per_configuration() -> None:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    done = subprocess.run(
        # fp32 only: each other precision would add two cold compilations (about 20 s on a
        # 2-core CPU) to run the same code path with another dtype argument.
        [*DRY_RUN, "--precisions", "fp32"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    rows = [line for line in done.stdout.splitlines() if line.startswith("| CPU (dry run) |")]
    configurations = {tuple(cell.strip() for cell in row.split("|")[2:6]) for row in rows}
    assert configurations == {
        (f"{inputs} 160x120", precision, compiled, overlap)
        for inputs in ("RGB", "RGB-D")
        for precision in ("fp32",)
        for compiled in ("off", "on")
        for overlap in ("off", "on")
    }
    assert len(rows) == len(configurations)
    assert "dry run (--quick)" in done.stdout and "target" not in done.stdout


def test_cpu_without_quick_is_refused_in_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--device", "cpu"]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert err.startswith("ERROR: --device cpu only runs the dry run (add --quick)")


@pytest.mark.skipif(torch.cuda.is_available(), reason="the GPU rows would be measured")
def test_no_gpu_is_refused_in_one_line_naming_the_dry_run(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert main([]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert err.startswith("ERROR: torch ") and "sees no CUDA GPU" in err
    assert "--device cpu --quick" in err


def test_verdict_takes_the_best_rgbd_fp16_row() -> None:
    rows = [
        Row("RGB", "fp16", compiled=True, overlap=True, hz=250.0),
        Row("RGB-D", "fp32", compiled=True, overlap=True, hz=140.0),
        Row("RGB-D", "fp16", compiled=False, overlap=False, hz=80.0),
        Row("RGB-D", "fp16", compiled=True, overlap=True, hz=99.5),
    ]
    assert verdict(rows) == (
        "target RGB-D 640x480 ViT-S fp16 >= 100 Hz: NOT MET, best 99.5 Hz "
        "(torch.compile on, stage overlap on)"
    )
    rows.append(Row("RGB-D", "fp16", compiled=False, overlap=True, hz=120.0))
    assert verdict(rows) == (
        "target RGB-D 640x480 ViT-S fp16 >= 100 Hz: MET, best 120.0 Hz "
        "(torch.compile off, stage overlap on)"
    )
    assert verdict(rows[:2]) == (
        "target RGB-D 640x480 ViT-S fp16 >= 100 Hz: not measured (fp16 not in --precisions)"
    )


def test_table_has_one_markdown_row_per_configuration() -> None:
    rows = [
        Row("RGB-D", "fp16", compiled=True, overlap=False, hz=125.0),
        Row("RGB-D", "bf16", compiled=False, overlap=True, hz=50.0),
    ]
    lines = table(rows, "NVIDIA H100 80GB HBM3", (480, 640)).splitlines()
    assert lines[2:] == [
        "| NVIDIA H100 80GB HBM3 | RGB-D 640x480 | fp16 | on | off | 125.0 Hz | 8.00 | yes |",
        "| NVIDIA H100 80GB HBM3 | RGB-D 640x480 | bf16 | off | on | 50.0 Hz | 20.00 | no |",
    ]
    assert all(line.count("|") == lines[0].count("|") for line in lines)
