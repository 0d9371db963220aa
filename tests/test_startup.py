"""Every command answers --help before the heavy libraries load (measured in bench/RESULTS.md)."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
HEAVY = ("torch", "nnAudio", "librosa", "scipy.signal", "matplotlib")
COMMANDS = ["pipeline/extract.py", "pipeline/merge.py", "train/run.py", "train/tag.py", "train/report.py",
            "train/pretrained.py", "train/embed.py", "train/library.py",
            "eval/recall.py", "eval/auc.py", "data/demo.py", "data/fullscale.py"]

PROBE = """
import runpy, sys
sys.argv = [{cmd!r}, "--help"]
try:
    runpy.run_path({cmd!r}, run_name="__main__")
except SystemExit:
    pass
print("LOADED", [m for m in {heavy!r} if m in sys.modules])
"""


@pytest.mark.parametrize("cmd", COMMANDS)
def test_help_loads_no_heavy_library(cmd):
    res = subprocess.run([sys.executable, "-c", PROBE.format(cmd=cmd, heavy=HEAVY)], cwd=REPO,
                         capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    assert "usage:" in res.stdout
    assert res.stdout.strip().splitlines()[-1] == "LOADED []"


def test_model_names_known_without_torch():
    from train.models import MODELS
    from train.run import DEFAULT_INPUTS
    assert set(DEFAULT_INPUTS) == set(MODELS)
