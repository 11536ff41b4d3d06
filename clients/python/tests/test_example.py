"""The README's example (``examples/load_weights.py``), run as a program."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from conftest import Cluster

EXAMPLE = Path(__file__).resolve().parents[1] / "examples/load_weights.py"


def test_the_example_ensures_the_model_and_loads_its_weights(cluster: Cluster) -> None:
    env = dict(os.environ, PREWARM_AGENT=cluster.agent_url, PREWARM_TOKEN=cluster.token)
    out = subprocess.run([sys.executable, str(EXAMPLE), "models/tiny"], env=env,
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert lines[0].startswith("models/tiny@1 at "), out.stdout
    assert "config: {'layers': 1, 'dim': 4}" in lines
    assert "b: [0.25]" in lines and "w: [0.5, -1.0, 2.0, 4.0]" in lines
