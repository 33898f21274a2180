"""Pruning: magnitude and N:M masks against plain-numpy references, prune() and sparsity() on torch
modules, and the sparsity-vs-accuracy report."""
from __future__ import annotations

import json
import math
import subprocess
import sys

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from pyperfcore.quant import pruning

torch = pytest.importorskip("torch")
nn = torch.nn


# ------------------------------------------------------------------ references (plain numpy, loops)
def ref_magnitude_keep(w: np.ndarray, sparsity: float, scope: str = "tensor") -> np.ndarray:
    """Prune floor(s * count) entries per row, ordered by |w| then flat index (lower pruned first)."""
    a = np.abs(np.asarray(w, dtype=np.float64))
    rows = a.reshape(1, -1) if scope == "tensor" else a.reshape(a.shape[0], -1)
    keep = np.ones(rows.shape, dtype=bool)
    k = math.floor(sparsity * rows.shape[1])
    for i, row in enumerate(rows):
        order = np.lexsort((np.arange(row.size), row))
        keep[i, order[:k]] = False
    return keep.reshape(a.shape)


def ref_nm_keep(w: np.ndarray, n: int, m: int) -> np.ndarray:
    """Keep the n largest |w| of each group of m along the last axis; ties keep the lower index."""
    a = np.abs(np.asarray(w, dtype=np.float64))
    keep = np.zeros(a.shape, dtype=bool)
    for i in range(a.shape[0]):
        for g in range(0, a.shape[1], m):
            for j in sorted(range(m), key=lambda j: (-a[i, g + j], j))[:n]:
                keep[i, g + j] = True
    return keep


KINDS = ["numpy-float32", "numpy-float64", "torch-float32", "torch-bfloat16"]


def as_kind(w64: np.ndarray, kind: str) -> tuple[object, np.ndarray]:
    """The weight in the given container/dtype, and its exact values as float64 for the reference."""
    lib, dtype = kind.split("-")
    if lib == "numpy":
        w = w64.astype(dtype)
        return w, w.astype(np.float64)
    t = torch.from_numpy(w64).to(getattr(torch, dtype))
    return t, t.double().numpy()


def to_np(mask: object) -> np.ndarray:
    return mask.numpy() if isinstance(mask, torch.Tensor) else mask


@st.composite
def weights(draw, min_ndim: int = 1, max_ndim: int = 3) -> np.ndarray:
    shape = tuple(draw(st.lists(st.integers(1, 9), min_size=min_ndim, max_size=max_ndim)))
    w = np.random.default_rng(draw(st.integers(0, 2**32 - 1))).standard_normal(shape)
    if draw(st.booleans()):
        # coarse values: many equal magnitudes (+x and -x, zeros), so ties sit at the threshold
        w = np.round(w * 2) / 2
    return w


def assert_is_mask_of(mask: object, weight: object) -> None:
    if isinstance(weight, torch.Tensor):
        assert isinstance(mask, torch.Tensor) and mask.dtype == torch.bool and mask.device == weight.device
    else:
        assert isinstance(mask, np.ndarray) and mask.dtype == np.bool_
    assert tuple(mask.shape) == tuple(weight.shape)


def assert_threshold(a: np.ndarray, keep: np.ndarray) -> None:
    if keep.any() and (~keep).any():
        assert a[keep].min() >= a[~keep].max()


# ------------------------------------------------------------------ magnitude_mask
@pytest.mark.parametrize("kind", KINDS)
@given(w64=weights(), s=st.floats(0.0, 1.0, exclude_max=True))
def test_magnitude_mask_tensor_scope_matches_reference(kind, w64, s):
    w, exact = as_kind(w64, kind)
    mask = pruning.magnitude_mask(w, s)
    assert_is_mask_of(mask, w)
    keep = to_np(mask)
    np.testing.assert_array_equal(keep, ref_magnitude_keep(exact, s))
    assert np.count_nonzero(~keep) == math.floor(s * exact.size)
    assert_threshold(np.abs(exact), keep)


@pytest.mark.parametrize("kind", KINDS)
@given(w64=weights(min_ndim=2), s=st.floats(0.0, 1.0, exclude_max=True))
def test_magnitude_mask_row_scope_matches_reference(kind, w64, s):
    w, exact = as_kind(w64, kind)
    keep = to_np(pruning.magnitude_mask(w, s, scope="row"))
    np.testing.assert_array_equal(keep, ref_magnitude_keep(exact, s, "row"))
    per_row = keep.reshape(keep.shape[0], -1)
    pruned = per_row.shape[1] - per_row.sum(axis=1)
    assert (pruned == math.floor(s * per_row.shape[1])).all()
    for a_row, k_row in zip(np.abs(exact).reshape(per_row.shape), per_row):
        assert_threshold(a_row, k_row)


def test_magnitude_mask_examples():
    w = np.array([[0.5, -0.1, 0.3, -0.1], [2.0, 0.0, -3.0, 0.1]], np.float32)
    # tensor: 4 of 8 smallest are 0.0, -0.1 (idx 1), -0.1 (idx 3), 0.1 (idx 7)
    np.testing.assert_array_equal(pruning.magnitude_mask(w, 0.5), [[1, 0, 1, 0], [1, 0, 1, 0]])
    # ties: exactly one of the two -0.1 goes, the lower index
    np.testing.assert_array_equal(pruning.magnitude_mask(w, 0.25), [[1, 0, 1, 1], [1, 0, 1, 1]])
    np.testing.assert_array_equal(pruning.magnitude_mask(w, 0.5, scope="row"), [[1, 0, 1, 0], [1, 0, 1, 0]])
    np.testing.assert_array_equal(pruning.magnitude_mask(w, 0.0), np.ones_like(w, bool))
    one = np.array([[3.0]], np.float64)
    assert pruning.magnitude_mask(one, 0.99).all()  # floor(0.99 * 1) == 0
    for empty in (np.zeros((0, 5), np.float32), torch.zeros(4, 0)):
        out = pruning.magnitude_mask(empty, 0.5, scope="row")
        assert tuple(out.shape) == tuple(empty.shape)


# ------------------------------------------------------------------ semi_structured_mask
@given(data=st.data(), nm=st.sampled_from([(2, 4), (1, 4), (2, 8)]))
def test_semi_structured_mask_matches_reference(data, nm):
    n, m = nm
    rows, groups = data.draw(st.integers(1, 7)), data.draw(st.integers(1, 6))
    w64 = np.random.default_rng(data.draw(st.integers(0, 2**32 - 1))).standard_normal((rows, groups * m))
    if data.draw(st.booleans()):
        w64 = np.round(w64)  # ties inside groups
    w32 = w64.astype(np.float32)
    keep = pruning.semi_structured_mask(w32, n, m)
    assert_is_mask_of(keep, w32)
    np.testing.assert_array_equal(keep, ref_nm_keep(w32, n, m))
    assert (keep.reshape(rows, groups, m).sum(axis=-1) == n).all()
    t = torch.from_numpy(w32)
    tkeep = pruning.semi_structured_mask(t, n, m)
    assert_is_mask_of(tkeep, t)
    np.testing.assert_array_equal(tkeep.numpy(), keep)


def test_semi_structured_mask_examples_and_errors():
    w = np.array([[0.1, -4.0, 2.0, 0.5, 1.0, 1.0, 1.0, -1.0]], np.float32)
    np.testing.assert_array_equal(pruning.semi_structured_mask(w), [[0, 1, 1, 0, 1, 1, 0, 0]])
    np.testing.assert_array_equal(pruning.semi_structured_mask(w, 1, 4), [[0, 1, 0, 0, 1, 0, 0, 0]])
    assert pruning.semi_structured_mask(np.zeros((3, 0), np.float32)).shape == (3, 0)
    with pytest.raises(ValueError, match="not a multiple of m=4"):
        pruning.semi_structured_mask(np.ones((2, 6), np.float32))
    with pytest.raises(ValueError, match="not a multiple of m=4"):
        pruning.semi_structured_mask(torch.ones(2, 10))
    with pytest.raises(ValueError, match="2-D"):
        pruning.semi_structured_mask(np.ones(8, np.float32))
    for n, m in [(0, 4), (4, 4), (5, 4), (-1, 2)]:
        with pytest.raises(ValueError, match="0 < n < m"):
            pruning.semi_structured_mask(np.ones((2, 8), np.float32), n, m)
    with pytest.raises(TypeError, match="int"):
        pruning.semi_structured_mask(np.ones((2, 8), np.float32), 2.0, 4)


# ------------------------------------------------------------------ input errors
@pytest.mark.parametrize("fn", [lambda w: pruning.magnitude_mask(w, 0.5), pruning.semi_structured_mask])
def test_masks_reject_bad_weights(fn):
    for bad in (np.arange(8).reshape(2, 4), torch.arange(8).reshape(2, 4), np.ones((2, 4), bool),
                np.ones((2, 4), np.complex64)):
        with pytest.raises(TypeError, match="float"):
            fn(bad)
    with pytest.raises(TypeError, match="numpy array or a torch tensor"):
        fn([[1.0, 2.0, 3.0, 4.0]])
    w = np.ones((2, 4), np.float32)
    w[0, 1], w[1, 2] = np.nan, np.inf
    with pytest.raises(ValueError, match="2 NaN"):
        fn(w)
    with pytest.raises(ValueError, match="2 NaN"):
        fn(torch.from_numpy(w))


@pytest.mark.parametrize("s", [1.0, -0.1, float("nan"), float("inf"), 2])
def test_magnitude_mask_rejects_bad_sparsity(s):
    with pytest.raises(ValueError, match=r"\[0, 1\)"):
        pruning.magnitude_mask(np.ones((2, 4), np.float32), s)


def test_magnitude_mask_rejects_bad_scope_and_types():
    w = np.ones((2, 4), np.float32)
    with pytest.raises(TypeError, match="sparsity"):
        pruning.magnitude_mask(w, "0.5")
    with pytest.raises(TypeError, match="sparsity"):
        pruning.magnitude_mask(w, True)
    with pytest.raises(ValueError, match="scope"):
        pruning.magnitude_mask(w, 0.5, scope="global")  # global needs several layers: prune() only
    with pytest.raises(ValueError, match="2 dimensions"):
        pruning.magnitude_mask(np.ones(4, np.float32), 0.5, scope="row")


def test_numpy_path_does_not_import_torch():
    code = ("import sys, numpy as np\n"
            "from pyperfcore.quant import pruning\n"
            "w = np.random.default_rng(0).standard_normal((8, 16)).astype(np.float32)\n"
            "assert (~pruning.magnitude_mask(w, 0.5)).sum() == 64\n"
            "assert pruning.semi_structured_mask(w).sum() == 64\n"
            "print('torch' in sys.modules)\n")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "False"


# ------------------------------------------------------------------ prune() and sparsity()
def _mlp(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(48, 96), nn.GELU(), nn.Linear(96, 48))


class Block(nn.Module):
    """A module with its own method (what a user's run() would call), nested in a Sequential."""

    def __init__(self) -> None:
        super().__init__()
        self.dense = nn.Linear(32, 64)
        self.act = nn.GELU()
        self.out = nn.Linear(64, 32)

    def forward(self, x):
        return self.out(self.act(self.dense(x))) + x

    def embed(self, x):
        return nn.functional.normalize(self.forward(x), dim=-1)


def _weights(m: nn.Module) -> dict[str, np.ndarray]:
    return {k: v.detach().clone().numpy() for k, v in m.state_dict().items()}


@pytest.mark.parametrize("scope", ["tensor", "row"])
def test_prune_magnitude_in_place(rng, scope):
    m = _mlp()
    before = _weights(m)
    params = list(m.parameters())
    res = pruning.prune(m, sparsity=0.6, scope=scope)
    assert all(a is b for a, b in zip(params, m.parameters()))  # same Parameter objects
    assert set(res.layers) == {"0", "2"} and res.skipped == {}
    for name in ("0", "2"):
        w0 = before[f"{name}.weight"]
        w = m.get_submodule(name).weight.detach().numpy()
        keep = ref_magnitude_keep(w0, 0.6, scope)
        np.testing.assert_array_equal(w, w0 * keep)  # exactly the mask, applied by multiplication
        expected = math.floor(0.6 * w0.size) if scope == "tensor" else w0.shape[0] * math.floor(0.6 * w0.shape[1])
        assert np.count_nonzero(w == 0) == expected
        assert res.layers[name] == {"sparsity": expected / w0.size, "shape": list(w0.shape)}
        np.testing.assert_array_equal(m.get_submodule(name).bias.detach().numpy(), before[f"{name}.bias"])
    assert pruning.sparsity(m) == {k: v["sparsity"] for k, v in res.layers.items()}
    with torch.no_grad():
        y = m(torch.from_numpy(rng.standard_normal((5, 48)).astype(np.float32)))
    assert y.shape == (5, 48) and torch.isfinite(y).all()


def test_prune_global_scope_is_one_exact_threshold():
    m = _mlp()
    with torch.no_grad():
        m[2].weight.mul_(4)  # layer 2 is now much larger: a global threshold prunes mostly layer 0
    before = _weights(m)
    res = pruning.prune(m, sparsity=0.5, scope="global")
    flat = np.concatenate([before["0.weight"].ravel(), before["2.weight"].ravel()])
    keep = ref_magnitude_keep(flat, 0.5)
    after = np.concatenate([m[0].weight.detach().numpy().ravel(), m[2].weight.detach().numpy().ravel()])
    np.testing.assert_array_equal(after, flat * keep)
    assert np.count_nonzero(after == 0) == math.floor(0.5 * flat.size)
    assert res.layers["0"]["sparsity"] > 0.7 and res.layers["2"]["sparsity"] < 0.3
    assert res.overall_sparsity == pytest.approx(math.floor(0.5 * flat.size) / flat.size)


def test_prune_2_4_exclude_and_skip_reasons():
    torch.manual_seed(0)
    m = nn.Sequential(nn.Linear(48, 96), nn.GELU(), nn.Linear(96, 30), nn.ReLU(), nn.Linear(30, 8), Block())
    before = _weights(m)
    res = pruning.prune(m, "2:4", exclude=["0", "*.out"])
    assert set(res.layers) == {"2", "5.dense"}
    assert "excluded" in res.skipped["0"] and "'0'" in res.skipped["0"]
    assert "'*.out'" in res.skipped["5.out"]
    assert "in_features (30) is not a multiple of m=4" == res.skipped["4"]
    for name in ("0", "4", "5.out"):  # left exactly as they were
        np.testing.assert_array_equal(m.get_submodule(name).weight.detach().numpy(), before[f"{name}.weight"])
    for name in ("2", "5.dense"):
        w = m.get_submodule(name).weight.detach().numpy()
        np.testing.assert_array_equal(w, before[f"{name}.weight"] * ref_nm_keep(before[f"{name}.weight"], 2, 4))
        assert ((w.reshape(w.shape[0], -1, 4) != 0).sum(-1) == 2).all()
        assert res.layers[name]["sparsity"] == 0.5
    res = pruning.prune(m, "semi_structured", n=1, m=8, exclude="5.*")
    assert res.layers["2"]["sparsity"] == 0.875 and "multiple of m=8" in res.skipped["4"]


def test_prune_module_with_custom_method(rng):
    b = Block()
    opt = torch.optim.SGD(b.parameters(), lr=0.1)
    res = pruning.prune(b, "2:4")
    assert opt.param_groups[0]["params"][0] is b.dense.weight  # optimizers still hold the live weights
    assert {k: v["sparsity"] for k, v in res.layers.items()} == {"dense": 0.5, "out": 0.5}
    with torch.no_grad():
        e = b.embed(torch.from_numpy(rng.standard_normal((6, 32)).astype(np.float32)))
    assert e.shape == (6, 32) and torch.isfinite(e).all()


def test_prune_skips_linear_subclasses_with_a_reason():
    attn = nn.MultiheadAttention(16, 2)  # out_proj is a NonDynamicallyQuantizableLinear
    m = nn.ModuleDict({"attn": attn, "head": nn.Linear(16, 4)})
    before = attn.out_proj.weight.detach().clone()
    res = pruning.prune(m, sparsity=0.5)
    assert list(res.layers) == ["head"] and "subclass of nn.Linear" in res.skipped["attn.out_proj"]
    assert torch.equal(attn.out_proj.weight, before)


def test_prune_tied_weight_is_pruned_once():
    torch.manual_seed(0)
    m = nn.Sequential(nn.Linear(16, 16), nn.Linear(16, 16))
    m[1].weight = m[0].weight
    res = pruning.prune(m, sparsity=0.5, scope="global")
    assert list(res.layers) == ["0"] and "shares its weight with layer '0'" in res.skipped["1"]
    assert np.count_nonzero(m[0].weight.detach().numpy() == 0) == 128


def test_prune_then_optimize_keeps_zero_codes():
    from pyperfcore.quant.torch_ops import optimize

    m = _mlp()
    pruning.prune(m, sparsity=0.5)
    zero = {name: (m.get_submodule(name).weight == 0).numpy() for name in ("0", "2")}
    optimize(m, dtype="int8")
    rep = pruning.sparsity(m)
    for name in ("0", "2"):
        q = m.get_submodule(name).qweight.numpy()
        assert (q[zero[name]] == 0).all()  # symmetric INT8: exact 0.0 is code 0
        assert rep[name] == np.count_nonzero(q == 0) / q.size >= 0.5


def test_prune_errors_leave_the_module_unchanged():
    m = _mlp()
    with torch.no_grad():
        m[2].weight[3, 5] = float("nan")
    before = _weights(m)
    for kwargs in ({}, {"scope": "global"}, {"method": "2:4"}):
        with pytest.raises(ValueError, match="'2'.*1 NaN"):
            pruning.prune(m, **kwargs)
        np.testing.assert_array_equal(m[0].weight.detach().numpy(), before["0.weight"])
    m = _mlp()
    for kwargs, match in [({"method": "random"}, "method"), ({"scope": "layer"}, "scope"),
                          ({"method": "2:4", "scope": "global"}, "magnitude pruning only"),
                          ({"sparsity": 1.0}, r"\[0, 1\)"), ({"sparsity": float("nan")}, r"\[0, 1\)"),
                          ({"sparsity": -0.1}, r"\[0, 1\)"), ({"method": "2:4", "n": 4, "m": 4}, "0 < n < m")]:
        with pytest.raises(ValueError, match=match):
            pruning.prune(m, **kwargs)
    with pytest.raises(ValueError, match="no nn.Linear"):
        pruning.prune(nn.Sequential(nn.GELU(), nn.LayerNorm(4)))
    with pytest.raises(TypeError, match="nn.Module"):
        pruning.prune(np.ones((4, 4), np.float32))
    with pytest.raises(TypeError, match="nn.Module"):
        pruning.sparsity(np.ones((4, 4), np.float32))
    assert pruning.sparsity(nn.GELU()) == {}


# ------------------------------------------------------------------ sparsity_report()
def test_sparsity_report_levels(tmp_path, rng):
    torch.manual_seed(0)
    m = nn.Sequential(nn.Linear(48, 96), nn.GELU(), nn.Dropout(0.3), nn.Linear(96, 48))
    before = _weights(m)
    x = torch.from_numpy(rng.standard_normal((24, 48)).astype(np.float32))
    rep = pruning.sparsity_report(m, x)
    # the user's model: same weights, same layer types, still in training mode
    for k, v in _weights(m).items():
        np.testing.assert_array_equal(v, before[k])
    assert type(m[0]) is nn.Linear and m.training
    targets = [r["target"] for r in rep.rows]
    assert targets == [0.0, 0.25, 0.5, 0.75, 0.9]
    by = {r["target"]: r for r in rep.rows}
    assert by[0.0]["cosine_min"] >= 0.99999  # eval mode on both sides: dropout does not add noise
    assert by[0.9]["cosine_mean"] < by[0.25]["cosine_mean"]
    assert by[0.9]["mean_abs_err"] > by[0.25]["mean_abs_err"]
    total = 48 * 96 * 2
    for r in rep.rows:
        assert r["sparsity"] == pytest.approx((math.floor(r["target"] * 48 * 96) * 2) / total)
        assert r["quantized_sparsity"] is None and 0.0 <= r["nn_agreement"] <= 1.0
    assert rep.layers == ["0", "3"] and rep.skipped == {}
    table = rep.table()
    for t in targets:
        assert f"{t:.2f}" in table
    loaded = json.loads(rep.to_json(tmp_path / "r.json"))
    assert loaded == json.loads((tmp_path / "r.json").read_text())
    assert loaded["rows"] == rep.rows and loaded["method"] == "magnitude"
    ok = [r for r in rep.rows if r["cosine_min"] >= 0.95]
    assert rep.best(0.95) == max(ok, key=lambda r: r["sparsity"])
    assert rep.best(1.1) is None


def test_sparsity_report_with_int8(rng):
    m = _mlp()
    x = torch.from_numpy(rng.standard_normal((16, 48)).astype(np.float32))
    rep = pruning.sparsity_report(m, x, sparsities=(0.0, 0.5), quantize="int8", exclude=["2"])
    assert type(m[0]) is nn.Linear
    r0, r5 = rep.rows
    assert 0.99 < r0["cosine_min"] < 1.0  # quantization alone: close, but not exact
    assert r5["sparsity"] == 0.5 and r5["quantized_sparsity"] >= 0.5
    assert rep.layers == ["0"] and "excluded" in rep.skipped["2"] and "quantize=int8" in rep.table()


def test_sparsity_report_2_4_custom_run_and_small_batches(rng):
    torch.manual_seed(0)
    b = Block()
    x = torch.from_numpy(rng.standard_normal((8, 32)).astype(np.float32))

    def run(model, inputs):
        with torch.no_grad():
            return model.embed(inputs)

    rep = pruning.sparsity_report(b, x, method="2:4", run=run, embeddings=False)
    assert len(rep.rows) == 1 and rep.rows[0]["target"] == 0.5 and rep.rows[0]["sparsity"] == 0.5
    assert rep.rows[0]["nn_agreement"] is None and rep.method == "2:4"
    assert 0.0 < rep.rows[0]["cosine_min"] < 0.9999  # pruning half the weights is visible
    assert b.dense.weight.count_nonzero() == b.dense.weight.numel()
    rep = pruning.sparsity_report(b, x[:2], sparsities=[0.5], run=run)
    assert rep.rows[0]["nn_agreement"] is None  # fewer than 3 rows: no nearest neighbours


def test_sparsity_report_errors(rng):
    m = _mlp()
    x = torch.zeros(2, 48)
    with pytest.raises(ValueError, match=r"\[0, 1\)"):
        pruning.sparsity_report(m, x, sparsities=(0.0, 1.0))
    with pytest.raises(ValueError, match="quantize"):
        pruning.sparsity_report(m, x, quantize="int4")
    with pytest.raises(ValueError, match="method"):
        pruning.sparsity_report(m, x, method="l1")
    with pytest.raises(ValueError, match="scope"):
        pruning.sparsity_report(m, x, scope="layer")
    with pytest.raises(TypeError, match="iterable"):
        pruning.sparsity_report(m, x, sparsities=0.5)
    with pytest.raises(ValueError, match="no nn.Linear"):
        pruning.sparsity_report(nn.Sequential(nn.GELU()), x)
