"""quant.warmup: every batch size called first-then-steady, batches built from the example's rows,
bad arguments refused at the call, a raising model reported with its batch size."""
from __future__ import annotations

import json

import numpy as np
import pytest

from pyperfcore import quant
from pyperfcore.quant.warming import default_batch_sizes


class _Counting:
    def __init__(self, fail_at=None):
        self.shapes = []
        self.fail_at = fail_at

    def __call__(self, x, scale=1.0):
        self.shapes.append(tuple(x.shape))
        if self.fail_at is not None and x.shape[0] == self.fail_at:
            raise FloatingPointError("overflow in layer 3")
        return x * scale


def test_default_batch_sizes():
    assert default_batch_sizes(1) == [1]
    assert default_batch_sizes(16) == [1, 2, 4, 8, 16]
    assert default_batch_sizes(24) == [1, 2, 4, 8, 16, 24]
    for bad in (0, -3, 2.0, True, "8"):
        with pytest.raises(ValueError, match="max_batch must be an int >= 1"):
            default_batch_sizes(bad)


def test_numpy_model_every_size_first_then_steady(rng):
    model = _Counting()
    ex = rng.standard_normal((3, 5)).astype(np.float32)
    rep = quant.warmup(model, ex, max_batch=6, repeats=2)
    assert rep.batch_sizes == [1, 2, 4, 6] and rep.device == "cpu"
    assert model.shapes == [(b, 5) for b in (1, 2, 4, 6) for _ in range(3)]  # first + 2 repeats each
    assert len(rep.first_ms) == len(rep.steady_ms) == 4
    assert all(t > 0 for t in rep.first_ms + rep.steady_ms)
    data = json.loads(rep.to_json())
    assert data["batch_sizes"] == [1, 2, 4, 6] and len(data["steady_ms"]) == 4
    rep.gpu_state = {k: 0 for k in rep.gpu_state}  # (other tests may have loaded the GPU kernels)
    lines = rep.table().splitlines()
    assert lines[0] == "warm-up on cpu" and len(lines) == 2 + 4 and lines[-1].split()[0] == "6"
    rep.gpu_state = {"autotuned": 3, "direct_launches": 0}
    assert rep.table().splitlines()[-1] == "GPU kernel state added: autotuned 3, direct_launches 0"


def test_batches_cycle_the_example_rows(rng):
    seen = []
    ex = rng.standard_normal((3, 4))
    quant.warmup(lambda x: seen.append(x.copy()), ex, [5], repeats=1)
    np.testing.assert_array_equal(seen[0], ex[[0, 1, 2, 0, 1]])


def test_dict_tuple_and_callable_examples(rng):
    torch = pytest.importorskip("torch")
    got = []

    def model(input_ids, attention_mask, flag="x"):
        got.append((tuple(input_ids.shape), tuple(attention_mask.shape), flag))

    ids = torch.arange(12).view(2, 6)
    quant.warmup(model, {"input_ids": ids, "attention_mask": torch.ones(2, 6), "flag": "y"}, [3], repeats=1)
    assert got == [((3, 6), (3, 6), "y")] * 2
    got.clear()
    quant.warmup(model, (ids, torch.ones(2, 6)), [1], repeats=1)
    assert got == [((1, 6), (1, 6), "x")] * 2
    got.clear()
    quant.warmup(model, lambda b: {"input_ids": torch.zeros(b, 2), "attention_mask": torch.zeros(b, 2)}, [4, 7],
                 repeats=1)
    assert [g[0] for g in got] == [(4, 2), (4, 2), (7, 2), (7, 2)]


def test_optimized_module_under_no_grad(rng):
    torch = pytest.importorskip("torch")
    torch.manual_seed(0)
    mod = torch.nn.Sequential(torch.nn.Linear(32, 64), torch.nn.GELU(), torch.nn.Linear(64, 16)).eval()
    quant.optimize(mod)
    grads = []
    mod.register_forward_hook(lambda m, i, o: grads.append(torch.is_grad_enabled()))
    rep = quant.warmup(mod, torch.randn(2, 32), [1, 8], repeats=2)
    assert rep.batch_sizes == [1, 8] and grads == [False] * 6
    assert set(rep.gpu_state) <= {"autotuned", "tma_picks", "tma_forced", "small_m_picks", "direct_launches"}


def test_bad_arguments_and_empty(rng):
    ex = rng.standard_normal((2, 3))
    with pytest.raises(ValueError, match="batch sizes must be ints >= 1"):
        quant.warmup(_Counting(), ex, [4, 0])
    with pytest.raises(ValueError, match="batch sizes must be ints >= 1"):
        quant.warmup(_Counting(), ex, [1.5])
    with pytest.raises(ValueError, match="repeats must be an int >= 1"):
        quant.warmup(_Counting(), ex, [1], repeats=0)
    with pytest.raises(ValueError, match="no rows"):
        quant.warmup(_Counting(), ex[:0], [1])
    with pytest.raises(ValueError, match="batch .first. dimension"):
        quant.warmup(_Counting(), np.array(3.0), [1])
    with pytest.raises(ValueError, match="disagree on the batch dimension"):
        quant.warmup(lambda a, b: None, (ex, ex[:1]), [1])
    with pytest.raises(TypeError, match="example must be"):
        quant.warmup(_Counting(), "hello", [1])
    model = _Counting()
    rep = quant.warmup(model, ex, [])
    assert rep.batch_sizes == [] and model.shapes == [] and rep.table().splitlines()[0] == "warm-up on cpu"


def test_a_raising_model_names_the_batch_size(rng):
    with pytest.raises(RuntimeError, match=r"batch size 4: FloatingPointError: overflow in layer 3") as ei:
        quant.warmup(_Counting(fail_at=4), rng.standard_normal((2, 3)), [1, 2, 4, 8])
    assert isinstance(ei.value.__cause__, FloatingPointError)


@pytest.mark.gpu
@pytest.mark.triton
def test_gpu_warmup_tunes_before_serving():
    """On a GPU the warm-up is where the linear kernels tune and record their launches: the GPU
    state grows during it, and later calls at those sizes add nothing."""
    import torch

    torch.manual_seed(1)
    mod = torch.nn.Sequential(torch.nn.Linear(96, 160), torch.nn.GELU(), torch.nn.Linear(160, 48)).cuda().eval()
    quant.optimize(mod)
    rep = quant.warmup(mod, torch.randn(3, 96, device="cuda"), max_batch=32)
    assert rep.device == torch.cuda.get_device_name()
    assert rep.gpu_state["autotuned"] > 0 and rep.gpu_state["direct_launches"] > 0, rep.gpu_state
    again = quant.warmup(mod, torch.randn(3, 96, device="cuda"), max_batch=32, repeats=1)
    assert all(v == 0 for v in again.gpu_state.values()), again.gpu_state


def test_list_batches_for_a_batcher_function():
    """A Batcher's fn takes a list of requests: a callable example returning a list passes it as
    the one argument."""
    seen = []
    rep = quant.warmup(lambda xs: seen.append(len(xs)) or [x + 1 for x in xs], lambda b: [7] * b, max_batch=4,
                       repeats=1)
    assert rep.batch_sizes == [1, 2, 4] and seen == [1, 1, 2, 2, 4, 4]


def test_the_report_names_the_kernel_choices_made_during_it(monkeypatch, rng):
    """What the GPU kernels chose while warming (autotuned configs, TMA and small-M picks with
    their times) is listed in the report; choices that existed before are not. The kernels'
    state is simulated here by a model that records choices as the GPU launchers would."""
    pytest.importorskip("triton")
    from pyperfcore.kernels import quant_gemm as qg

    for attr in ("_BEST", "_PICK", "_FORCED", "_SMALL", "_DIRECT", "SMALL_WHY"):
        monkeypatch.setattr(qg, attr, {})
    qg._BEST[("half", 1, 64, 64, 0)] = "old config"  # before the warm-up: not reported

    def model(x):
        mb = 1 << (x.shape[0] - 1).bit_length()
        qg._BEST[("w8a8", mb, 4096, 1024, 0)] = f"BLOCK_M: {max(16, mb)}"
        if mb >= 512:
            qg._PICK[("half", mb, 4096, 1024, 0, "float16")] = None
        else:
            key = ("w8a8", 0, mb, 4096, 1024, "float32")
            qg._SMALL[key] = mb == 2
            qg.SMALL_WHY[key] = f"per call (host / device us): triton 9.0 / {mb}.0, cuda 8.0 / 7.0"

    rep = quant.warmup(model, rng.standard_normal((2, 3)), [1, 2, 600], repeats=1)
    assert rep.gpu_state == {"autotuned": 3, "tma_picks": 1, "tma_forced": 0, "small_m_picks": 2, "direct_launches": 0}
    assert rep.picks == [
        "autotuned w8a8 M<=1 N=4096 K=1024: BLOCK_M: 16",
        "autotuned w8a8 M<=2 N=4096 K=1024: BLOCK_M: 16",
        "autotuned w8a8 M<=1024 N=4096 K=1024: BLOCK_M: 1024",
        "TMA pick half M<=1024 N=4096 K=1024: pointer kernel",
        "small-M w8a8 M<=1 N=4096 K=1024: triton (per call (host / device us): triton 9.0 / 1.0, cuda 8.0 / 7.0)",
        "small-M w8a8 M<=2 N=4096 K=1024: cuda C++ (per call (host / device us): triton 9.0 / 2.0, cuda 8.0 / 7.0)",
    ]
    table = rep.table().splitlines()
    assert table[-7] == ("GPU kernel state added: autotuned 3, tma_picks 1, tma_forced 0, small_m_picks 2, "
                         "direct_launches 0")
    assert table[-6:] == [f"  {p}" for p in rep.picks]
    assert json.loads(rep.to_json())["picks"] == rep.picks
