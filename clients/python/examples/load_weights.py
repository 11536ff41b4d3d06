"""Ensures a model directory is on this capacity, then loads its weights while leased.

    python load_weights.py models/tiny    # agent at $PREWARM_AGENT (default 127.0.0.1:7200)

The weights are a safetensors file, read with the standard library (numpy arrays instead
when numpy is installed); any loader that takes a path works the same way.
"""

from __future__ import annotations

import json
import os
import struct
import sys
from pathlib import Path
from typing import Any, Dict

from prewarm import Agent


def load_safetensors(path: Path) -> Dict[str, Any]:
    """The float32 tensors of a safetensors file, by name (flat lists, or numpy arrays)."""
    with open(path, "rb") as f:
        (n,) = struct.unpack("<Q", f.read(8))
        header = json.loads(f.read(n))
        data = f.read()
    try:
        import numpy as np
    except ImportError:
        np = None
    tensors = {}
    for name, t in header.items():
        if name == "__metadata__":
            continue
        assert t["dtype"] == "F32", f"{name}: only F32 in this example"
        start, end = t["data_offsets"]
        raw = data[start:end]
        if np is not None:
            tensors[name] = np.frombuffer(raw, dtype="<f4").reshape(t["shape"])
        else:
            tensors[name] = list(struct.unpack(f"<{len(raw) // 4}f", raw))
    return tensors


def main() -> None:
    """Ensures ``sys.argv[1]`` and prints its config and weights."""
    agent = Agent(os.environ.get("PREWARM_AGENT", "127.0.0.1:7200"),
                  token=os.environ.get("PREWARM_TOKEN"))
    # Waits up to 60 s on a miss; the state stays leased (never evicted) inside the block.
    with agent.holding(sys.argv[1], timeout=60) as state:
        print(f"{state.resource}@{state.version} at {state.path} "
              f"({'hit' if state.hit else 'fetched'} in {state.wait_ms} ms)")
        config = json.loads((state.path / "config.json").read_text())
        weights = load_safetensors(state.path / "model.safetensors")
        print("config:", config)
        for name, w in sorted(weights.items()):
            print(f"{name}: {[float(x) for x in w]}")


if __name__ == "__main__":
    main()
