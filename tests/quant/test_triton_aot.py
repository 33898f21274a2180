"""Every tuned config of the Triton GEMM kernels builds for Hopper (sm_90) on this machine, with
no GPU: no compile error, no register spills, shared memory within the card's 227 KiB, Tensor-core
instructions where the tile allows them (wgmma from BLOCK_M 64 up, mma.sync below), TMA loads in
the TMA kernel and cp.async pipelining in the pointer kernels. A config that fails any of these
would otherwise only show up in a device check (the autotuner skips configs that run out of
resources, but a compile error fails the call)."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = [pytest.mark.triton, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def rows():
    import torch

    pytest.importorskip("triton.backends.nvidia")
    if torch.cuda.is_available():
        pytest.skip("on a GPU the kernels compile for real in the GPU tests; this saves the device's time")
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    out = subprocess.run([sys.executable, "-m", "tests.quant.triton_aot", "--arch", "90", "--extra"], cwd=ROOT, env=env,
                         capture_output=True, text=True, timeout=900)
    assert out.returncode == 0, out.stderr[-3000:]
    return [json.loads(line) for line in out.stdout.splitlines() if line.startswith("{")]


def test_every_config_builds_for_sm90(rows, monkeypatch):
    from pyperfcore.kernels import quant_gemm as qg

    # the subprocess compiled the GPU config lists (the interpreter's lists hold one config each)
    monkeypatch.setattr(qg, "_INTERPRET", False)
    lists = {"half": qg._half_configs(), "half_x32": qg._half_configs(), "half_tma": qg._half_tma_configs(),
             "half_tma_bf16": qg._half_tma_configs(),
             "w8a8": qg._gemm_configs(), "w8a8_tma": qg._w8a8_tma_configs(), "fused": qg._fused_configs()}
    for name, cfgs in lists.items():
        assert len(cfgs) > 1
        assert sorted(r["config"] for r in rows if r["kernel"] == name and not r.get("extra")) == sorted(
            f"{c.kwargs} w{c.num_warps} s{c.num_stages}" for c in cfgs), name
    extras = [r for r in rows if r.get("extra")]  # the tests' small configs, which GPU tests run too
    assert sorted({r["kernel"] for r in extras}) == ["fused", "half", "half_tma", "w8a8", "w8a8_tma"]
    bad = [r for r in rows if "error" in r]
    assert not bad, bad
    for r in rows:
        assert r["local"] == 0, ("register spills", r)
        assert r["smem"] <= r["smem_limit"], ("shared memory", r)


def test_instruction_mix(rows):
    for r in rows:
        cfg = r["config"]
        bm = int(cfg.split("'BLOCK_M': ")[1].split(",")[0])
        stages = int(cfg.rsplit(" s", 1)[1])
        if bm >= 64:
            assert r["wgmma"] > 0, ("no wgmma", r)
        else:
            assert r["mma"] > 0, ("no Tensor-core mma", r)
        if "_tma" in r["kernel"]:
            assert r["tma"] > 0 and r["cp_async"] == 0, ("TMA kernel without TMA loads", r)
        elif stages > 1:
            assert r["cp_async"] > 0, ("pointer kernel not pipelined", r)
