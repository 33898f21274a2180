"""Plain numpy oracles for the SLO tests: burn rates straight from raw event arrays."""
from __future__ import annotations

import numpy as np


def window_burn(times, bad, t, window_s, res, budget):
    """Error ratio / budget over the whole buckets (t - window, t] at resolution ``res``,
    computed from every raw event (times in seconds, bad booleans)."""
    times = np.asarray(times, dtype=np.float64)
    b = np.floor(times / res).astype(np.int64)
    now = int(np.floor(t / res))
    n = max(1, int(np.ceil(window_s / res - 1e-9)))
    sel = (b > now - n) & (b <= now)
    total = sel.sum()
    if total == 0:
        return 0.0
    return float(np.asarray(bad)[sel].sum()) / total / budget
