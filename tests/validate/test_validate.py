"""pyperfcore.validate: streamed metrics against numpy, tolerances, bad input, per-layer rows
of optimized torch models, and the ONNX export path against torch and the optimized model."""
from __future__ import annotations

import copy
import json

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from pyperfcore import quant, validate
from pyperfcore.quant.report import Metrics, _nn_agreement, compare


def _ref_metrics(r: np.ndarray, c: np.ndarray) -> dict[str, float]:
    # row by row, the textbook formulas
    r2, c2 = r.reshape(-1, r.shape[-1]).astype(np.float64), c.reshape(-1, c.shape[-1]).astype(np.float64)
    cos = []
    for a, b in zip(r2, c2):
        na, nb = np.sqrt((a * a).sum()), np.sqrt((b * b).sum())
        cos.append(1.0 if na == 0 and nb == 0 else float((a * b).sum() / max(na * nb, 1e-30)))
    return {"cosine_mean": float(np.mean(cos)), "cosine_min": float(np.min(cos)),
            "max_abs_err": float(np.abs(r2 - c2).max()), "mean_abs_err": float(np.abs(r2 - c2).mean()),
            "top1_agreement": float(np.mean([np.argmax(a) == np.argmax(b) for a, b in zip(r2, c2)]))}


finite = st.floats(-100, 100, allow_nan=False, width=32)


@settings(max_examples=40)
@given(data=st.data(), rows=st.integers(1, 40), width=st.integers(1, 17))
def test_streamed_metrics_match_numpy_on_concatenation(data, rows, width):
    r = data.draw(hnp.arrays(np.float32, (rows, width), elements=finite))
    noise = data.draw(hnp.arrays(np.float32, (rows, width), elements=st.floats(-1, 1, width=32)))
    c = r + noise
    cuts = sorted(data.draw(st.lists(st.integers(0, rows), max_size=4)))
    m = Metrics()
    for a, b in zip([0, *cuts], [*cuts, rows]):
        m.update(r[a:b], c[a:b])
    got, want = m.result(), _ref_metrics(r, c)
    for k in want:
        assert got[k] == pytest.approx(want[k], rel=1e-9, abs=1e-9), k
    assert compare(r, c) == pytest.approx(got)


@settings(max_examples=30)
@given(data=st.data(), rows=st.integers(3, 60), width=st.integers(2, 8), chunk=st.integers(1, 7))
def test_nearest_neighbour_agreement_chunked_matches_brute_force(data, rows, width, chunk):
    rng = np.random.default_rng(data.draw(st.integers(0, 2**32 - 1)))
    r = rng.standard_normal((rows, width))
    c = r + data.draw(st.sampled_from([0.0, 0.05, 1.0])) * rng.standard_normal((rows, width))

    def nn(e):
        e = e / np.linalg.norm(e, axis=1, keepdims=True)
        s = e @ e.T
        np.fill_diagonal(s, -np.inf)
        return s.argmax(1)

    assert _nn_agreement(r, c, chunk=chunk) == pytest.approx(np.mean(nn(r) == nn(c)))


def _linear(seed: int, k: int = 12, n: int = 6):
    w = np.random.default_rng(seed).standard_normal((k, n))
    return lambda x: x @ w


def test_equivalence_passes_and_fails_with_named_reasons(rng):
    f = _linear(1)
    x = rng.standard_normal((50, 12))
    noise = 1e-3 * rng.standard_normal((50, 6))
    g = lambda v: f(v) + noise[: len(v)]  # noqa: E731
    res = validate.equivalence(f, g, x)
    assert res and res.ok and res.failures == [] and res.report.n == 50
    strict = validate.equivalence(f, g, x, atol=1e-4, rtol=0.0, min_cosine=1 - 1e-12, min_cosine_mean=1 - 1e-12)
    assert not strict
    want = int(np.sum(np.abs(noise) > 1e-4))
    assert any(f"{want} element(s) outside atol=0.0001" in s for s in strict.failures)
    assert any("min cosine" in s for s in strict.failures) and any("mean cosine" in s for s in strict.failures)
    assert strict.report.extra["tolerance_violations"] == want
    # rtol: relative to the reference's magnitude, as numpy.allclose
    rel = validate.equivalence(f, g, x, rtol=1e-3, atol=0.0)
    assert rel.report.extra["tolerance_violations"] == int(np.sum(np.abs(noise) > 1e-3 * np.abs(f(x))))
    assert "FAILED" in strict.table() and "OK" in res.table()


def test_equivalence_over_batches_equals_one_concatenated_call(rng):
    f, g = _linear(2), _linear(3)
    xs = [rng.standard_normal((n, 12)) for n in (5, 1, 17, 9)]
    whole = validate.equivalence(f, g, np.concatenate(xs), min_cosine=None, min_cosine_mean=None,
                                 min_nn_agreement=None)
    streamed = validate.equivalence(f, g, batches=iter(xs), min_cosine=None, min_cosine_mean=None,
                                    min_nn_agreement=None)
    assert streamed.batches == 4 and streamed.report.n == 32
    for k in ("cosine_mean", "cosine_min", "max_abs_err", "mean_abs_err", "top1_agreement", "nn_agreement"):
        assert getattr(streamed.report, k) == pytest.approx(getattr(whole.report, k)), k


def test_nearest_neighbour_agreement_is_checked_over_the_whole_set(rng):
    x = rng.standard_normal((40, 12))
    f = _linear(4)
    perm = rng.permutation(6)
    shuffled = lambda v: f(v)[:, perm] * 0.0 + f(v)[rng.permutation(len(v))] if len(v) else f(v)  # noqa: E731
    res = validate.equivalence(f, shuffled, batches=[x[:20], x[20:]], min_cosine=None, min_cosine_mean=None)
    assert not res and any("nearest-neighbour agreement" in s for s in res.failures)


def test_structured_outputs_are_compared_per_leaf(rng):
    x = rng.standard_normal((8, 12))
    f = _linear(5)
    ref = lambda v: {"logits": f(v), "extra": (f(v)[:, :2], np.float64(v.sum()))}  # noqa: E731
    cand = lambda v: {"logits": f(v), "extra": (f(v)[:, :2] + 5.0, np.float64(v.sum()))}  # noqa: E731
    res = validate.equivalence(ref, cand, x, min_nn_agreement=None, atol=1e-9)
    assert list(res.reports) == ["output.logits", "output.extra[0]", "output.extra[1]"]
    assert res.reports["output.logits"].max_abs_err == 0.0
    assert not res and all(s.startswith("output.extra[0]") for s in res.failures)
    sel = validate.equivalence(ref, cand, x, output=lambda o: o["logits"], min_nn_agreement=None, atol=1e-9)
    assert sel.ok and list(sel.reports) == ["output"]


def test_bad_input_gives_clear_errors(rng):
    x = rng.standard_normal((6, 12))
    f = _linear(6)
    with pytest.raises(ValueError, match="differ in shape"):
        validate.equivalence(f, lambda v: f(v)[:, :5], x)
    with pytest.raises(ValueError, match="differ in structure"):
        validate.equivalence(f, lambda v: (f(v), f(v)), x)
    with pytest.raises(ValueError, match="reference output contains NaN"):
        validate.equivalence(lambda v: f(v) * np.nan, f, x)
    with pytest.raises(ValueError, match="not both"):
        validate.equivalence(f, f, x, batches=[x])
    with pytest.raises(ValueError, match="no inputs"):
        validate.equivalence(f, f)
    with pytest.raises(TypeError, match="iterable of inputs"):
        validate.equivalence(f, f, batches=x)
    with pytest.raises(ValueError, match="atol"):
        validate.equivalence(f, f, x, atol=float("nan"))
    with pytest.raises(TypeError, match="output= to select"):
        validate.equivalence(lambda v: "text", lambda v: "text", x)

    def boom(v):
        raise KeyError("tokenizer missing")

    with pytest.raises(validate.ModelCallError, match="candidate model raised on batch 1: KeyError") as ei:
        validate.equivalence(f, lambda v: boom(v) if len(v) == 3 else f(v), batches=[x, x[:3]])
    assert isinstance(ei.value.__cause__, KeyError)


def test_candidate_nan_fails_and_is_counted(rng):
    x = rng.standard_normal((10, 12))
    f = _linear(7)

    def bad(v):
        y = f(v).copy()
        y[3, 1] = np.nan
        y[5, :2] = np.inf
        return y

    res = validate.equivalence(f, bad, x)
    assert not res
    assert any("3 NaN/inf value(s) in 2 row(s)" in s for s in res.failures)
    assert res.report.n == 8 and res.report.extra["nonfinite_rows"] == 2
    all_bad = validate.equivalence(f, lambda v: f(v) * np.nan, x)
    assert not all_bad and all_bad.report.n == 0


def test_empty_validation_set_is_not_evidence():
    res = validate.equivalence(_linear(8), _linear(8), batches=[])
    assert not res and res.batches == 0 and "empty validation set" in res.failures[0]
    empty = validate.equivalence(_linear(8), _linear(8), np.zeros((0, 12)))
    assert not empty and "empty output" in empty.failures[0]


# --------------------------------------------------------------------------- torch models
torch = pytest.importorskip("torch")
nn = torch.nn


class ResidualBlock(nn.Module):
    """A BERT-style output projection whose residual add the INT8 kernel takes in its epilogue."""

    def __init__(self, d: int = 32) -> None:
        super().__init__()
        # Hugging Face's names: optimize() fuses intermediate_act_fn into dense's epilogue
        self.dense = nn.Linear(d, 4 * d)
        self.intermediate_act_fn = nn.GELU()
        self.down = nn.Linear(4 * d, d)
        self.head = nn.Linear(d, 10)

    def forward(self, x):
        from pyperfcore.quant.torch_ops import QLinear

        h = self.intermediate_act_fn(self.dense(x))
        y = self.down(h, residual=x) if isinstance(self.down, QLinear) else self.down(h) + x
        return self.head(y)

    def encode(self, x):
        with torch.no_grad():
            return self.forward(x).numpy()


def _block(seed: int = 0) -> ResidualBlock:
    torch.manual_seed(seed)
    return ResidualBlock().eval()


def test_layer_rows_account_for_fused_activation_and_residual(rng):
    ref = _block()
    cand = quant.optimize(copy.deepcopy(ref))
    assert cand.dense.activation == "gelu" and isinstance(cand.intermediate_act_fn, nn.Identity)
    xs = [torch.from_numpy(rng.standard_normal((n, 32)).astype(np.float32)) for n in (7, 1, 12)]
    rows = validate.layer_report(ref, cand, batches=xs)
    assert list(rows) == ["dense", "down", "head"]
    # the first layer's input is the model input on both sides: whole == alone, exactly
    for k in ("cosine_mean", "cosine_min", "max_abs_err", "mean_abs_err"):
        assert rows["dense"][k] == rows["dense"][f"local_{k}"]
    # "dense" alone against the hand-made target gelu(W x + b): the fused GELU is accounted for
    x = torch.cat(xs)
    with torch.no_grad():
        want = compare(torch.nn.functional.gelu(ref.dense(x)), cand.dense(x))
    assert rows["dense"]["local_cosine_min"] == pytest.approx(want["cosine_min"], rel=1e-12)
    assert rows["dense"]["local_max_abs_err"] == pytest.approx(want["max_abs_err"], rel=1e-9)
    # "down" gets the residual fused; its rows compare the projection alone (residual removed)
    with torch.no_grad():
        h = torch.nn.functional.gelu(ref.dense(x))
        want_down = compare(ref.down(h), cand.down(h))
    assert rows["down"]["local_cosine_min"] == pytest.approx(want_down["cosine_min"], rel=1e-9)
    for r in rows.values():
        assert 0.999 < r["local_cosine_min"] < 1.0 and r["cosine_min"] > 0.99


def test_equivalence_layers_on_bound_methods_and_excluded_layer(rng):
    ref = _block(1)
    cand = quant.optimize(copy.deepcopy(ref), exclude=["head"])
    xs = [torch.from_numpy(rng.standard_normal((9, 32)).astype(np.float32)) for _ in range(3)]
    res = validate.equivalence(ref.encode, cand.encode, batches=xs, layers=True, embeddings=False)
    assert res.ok, res.failures
    rows = res.report.layers
    # the excluded layer is the same float layer: alone it is exact, in the model it sees the error before it
    assert rows["head"]["local_max_abs_err"] == 0.0 and rows["head"]["local_cosine_min"] == pytest.approx(1.0)
    assert rows["head"]["max_abs_err"] > 0.0
    table = res.report.table()
    assert "local cos min" in table and "head" in table
    back = json.loads(res.report.to_json())
    assert set(back["layers"]) == {"dense", "down", "head"}
    # hooks are removed afterwards: the fused Sequential / eager paths see no hooks
    assert not any(m._forward_hooks for m in ref.modules()) and not any(m._forward_hooks for m in cand.modules())


def test_layer_rows_need_two_torch_modules(rng):
    ref = _block()
    x = torch.zeros(2, 32)
    with pytest.raises(ValueError, match="two different modules"):
        validate.layer_report(ref, ref, x)
    with pytest.raises(TypeError, match="torch modules"):
        validate.layer_report(lambda v: v, ref, x)
    # a model raising inside the hooked pass leaves no hooks behind
    cand = quant.optimize(copy.deepcopy(ref))
    with pytest.raises(validate.ModelCallError):
        validate.layer_report(ref, cand, torch.zeros(2, 31))
    assert not any(m._forward_hooks for m in cand.modules())


def test_onnx_check_against_torch_and_the_optimized_model(tmp_path, rng):
    pytest.importorskip("onnxruntime")
    ref = _block(2)
    cand = quant.optimize(copy.deepcopy(ref))
    xs = [torch.from_numpy(rng.standard_normal((n, 32)).astype(np.float32)) for n in (1, 6, 13)]
    chk = validate.onnx_check(ref, xs[0], candidate=cand, batches=xs, path=tmp_path / "b.onnx",
                              min_nn_agreement=None)
    assert chk and chk.path.exists() and chk.exported.batches == 3
    assert chk.exported.report.cosine_min > 0.99999 and chk.exported.report.max_abs_err < 1e-4
    assert 0.99 < chk.candidate.report.cosine_min < 1.0
    assert "torch vs onnxruntime" in chk.table()
    # a candidate that is wrong is caught against the ONNX run
    wrong = lambda v: cand(v) + 0.5  # noqa: E731
    bad = validate.onnx_check(ref, xs[0], candidate=wrong, batches=xs, path=tmp_path / "c.onnx", atol=0.1)
    assert bad.exported.ok and not bad.candidate.ok and not bad
    with pytest.raises(TypeError, match="nn.Module"):
        validate.onnx_check(lambda v: v, xs[0])
    with pytest.raises(TypeError, match="tensor or a tuple of tensors"):
        validate.onnx_check(ref, xs[0].numpy())


def test_onnx_check_of_a_bert_encoder_with_variable_length_batches(tmp_path):
    pytest.importorskip("onnxruntime")
    from pyperfcore.quant.bert import BertEncoder

    torch.manual_seed(3)
    cfg = dict(vocab_size=60, hidden_size=32, max_position_embeddings=64, num_hidden_layers=2,
               num_attention_heads=4, intermediate_size=64)
    ref = BertEncoder(cfg).eval()
    cand = quant.optimize(copy.deepcopy(ref))
    g = torch.Generator().manual_seed(4)

    def batch(b, t):
        ids = torch.randint(0, 60, (b, t), generator=g)
        mask = torch.ones(b, t, dtype=torch.long)
        mask[0, t // 2:] = 0  # one padded row per batch
        return ids, mask

    data = [batch(3, 7), batch(5, 11), batch(2, 4)]
    chk = validate.onnx_check(ref, data[0], candidate=cand, batches=data, path=tmp_path / "bert.onnx",
                              min_nn_agreement=None)
    assert chk.ok, chk.table()
    assert chk.exported.report.n == 10
    res = validate.equivalence(ref, cand, batches=data, layers=True, min_nn_agreement=None)
    assert res.ok and len(res.report.layers) == 12
    assert all(r["local_cosine_min"] > 0.999 for r in res.report.layers.values())
