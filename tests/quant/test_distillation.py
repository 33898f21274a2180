"""Knowledge distillation: the losses against a numpy reference, their gradients, and the training
loop's guarantees (teacher untouched, modes restored, no update after a non-finite loss)."""
from __future__ import annotations

import copy
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

torch = pytest.importorskip("torch")
nn = torch.nn

from pyperfcore.quant.distillation import (  # noqa: E402
    DistillResult,
    agreement,
    distill,
    distillation_loss,
    embedding_distillation_loss,
)
from pyperfcore.quant.report import compare  # noqa: E402

# --------------------------------------------------------------------------------------------
# numpy references (float64)


def _log_softmax(x: np.ndarray) -> np.ndarray:
    z = x - x.max(-1, keepdims=True)
    return z - np.log(np.exp(z).sum(-1, keepdims=True))


def _softmax(x: np.ndarray) -> np.ndarray:
    return np.exp(_log_softmax(x))


def _kd_ref(s, t, temperature, alpha=1.0, labels=None) -> float:
    c = s.shape[-1]
    s2, t2 = s.reshape(-1, c).astype(np.float64), t.reshape(-1, c).astype(np.float64)
    rows = s2.shape[0]
    lp, lq = _log_softmax(t2 / temperature), _log_softmax(s2 / temperature)
    kl = float((np.exp(lp) * (lp - lq)).sum() / rows) * temperature**2
    if labels is None:
        return kl
    ce = float(-_log_softmax(s2)[np.arange(rows), labels.reshape(-1)].mean())
    return alpha * kl + (1 - alpha) * ce


def _kd_grad_ref(s, t, temperature, alpha=1.0, labels=None) -> np.ndarray:
    """d loss / d student logits: alpha * T * (q - p) / rows + (1 - alpha) * (softmax(s) - onehot) / rows."""
    c = s.shape[-1]
    s2, t2 = s.reshape(-1, c).astype(np.float64), t.reshape(-1, c).astype(np.float64)
    rows = s2.shape[0]
    g = alpha * temperature * (_softmax(s2 / temperature) - _softmax(t2 / temperature)) / rows
    if labels is not None:
        onehot = np.eye(c)[labels.reshape(-1)]
        g = g + (1 - alpha) * (_softmax(s2) - onehot) / rows
    return g.reshape(s.shape)


def _embedding_ref(s, t, kind) -> float:
    d = s.shape[-1]
    s2, t2 = s.reshape(-1, d).astype(np.float64), t.reshape(-1, d).astype(np.float64)
    if kind == "mse":
        return float(np.mean((s2 - t2) ** 2))
    su = s2 / np.maximum(np.linalg.norm(s2, axis=1, keepdims=True), 1e-12)
    tu = t2 / np.maximum(np.linalg.norm(t2, axis=1, keepdims=True), 1e-12)
    return float(np.mean(1 - (su * tu).sum(1)))


shapes = st.one_of(
    st.tuples(st.integers(1, 9), st.integers(1, 24)),
    st.tuples(st.integers(1, 3), st.integers(1, 5), st.integers(2, 12)),
)


def _logits(seed: int, shape, scale: float) -> tuple[np.ndarray, np.ndarray]:
    g = np.random.default_rng(seed)
    return ((g.standard_normal(shape) * scale).astype(np.float32), (g.standard_normal(shape) * scale).astype(np.float32))


# --------------------------------------------------------------------------------------------
# distillation_loss


@given(shape=shapes, seed=st.integers(0, 2**32 - 1), scale=st.floats(0.1, 10.0),
       temperature=st.floats(0.5, 8.0), alpha=st.floats(0.0, 1.0), with_labels=st.booleans())
def test_distillation_loss_matches_numpy(shape, seed, scale, temperature, alpha, with_labels):
    s, t = _logits(seed, shape, scale)
    labels = np.random.default_rng(seed + 1).integers(0, shape[-1], size=shape[:-1]) if with_labels else None
    if not with_labels:
        alpha = 1.0
    expected = _kd_ref(s, t, temperature, alpha, labels)
    lab = None if labels is None else torch.from_numpy(labels)
    got32 = distillation_loss(torch.from_numpy(s), torch.from_numpy(t), temperature=temperature, alpha=alpha, labels=lab)
    assert got32.dtype == torch.float32 and got32.shape == ()
    # float32 rounding of log-probabilities is ~1e-7 * their size, which T^2 then scales
    assert float(got32) == pytest.approx(expected, rel=1e-5, abs=2e-6 * temperature**2 * (1 + scale))
    s64 = torch.from_numpy(s).double().requires_grad_()
    t64 = torch.from_numpy(t).double().requires_grad_()  # the target: no gradient may reach it
    got64 = distillation_loss(s64, t64, temperature=temperature, alpha=alpha, labels=lab)
    assert float(got64.detach()) == pytest.approx(expected, rel=1e-10, abs=1e-12)
    got64.backward()
    np.testing.assert_allclose(s64.grad.numpy(), _kd_grad_ref(s, t, temperature, alpha, labels), rtol=1e-9, atol=1e-13)
    assert t64.grad is None


@given(shape=shapes, seed=st.integers(0, 2**32 - 1), scale=st.floats(0.1, 10.0), temperature=st.floats(0.5, 8.0))
def test_kl_is_zero_for_equal_or_shifted_logits_and_positive_otherwise(shape, seed, scale, temperature):
    s, t = _logits(seed, shape, scale)
    tt = torch.from_numpy(t)
    assert abs(float(distillation_loss(tt.clone(), tt, temperature=temperature))) <= 1e-7
    # softmax ignores a per-row constant, so a shifted student matches exactly as well
    shift = torch.from_numpy(np.random.default_rng(seed).standard_normal(shape[:-1] + (1,)).astype(np.float32))
    assert abs(float(distillation_loss(tt + shift, tt, temperature=temperature))) <= 1e-5 * temperature**2
    if shape[-1] >= 2:
        # KL > 0 for different distributions; in float32, rounding of log-probabilities near 0
        # (nearly one-hot rows) can leave ~1e-9 below 0 when the true KL is that small
        got = float(distillation_loss(torch.from_numpy(s), tt, temperature=temperature))
        assert got >= -1e-7 * temperature**2
        if _kd_ref(s, t, temperature) > 1e-5:
            assert got > 0


def test_t_squared_keeps_gradient_scale_across_temperatures(rng):
    # For a student close to the teacher, grad = T (q - p) / rows ~ J (s - t) / rows with J the
    # softmax Jacobian at t/T: roughly T-independent for logits of moderate size. Without the T^2
    # factor the gradient would shrink by (8/2)^2 = 16 between T=2 and T=8.
    for n_classes in (3, 10, 32):
        t = torch.from_numpy(rng.standard_normal((64, n_classes)).astype(np.float64))
        s0 = t + 1e-3 * torch.from_numpy(rng.standard_normal((64, n_classes)))
        norms = {}
        for temperature in (2.0, 8.0):
            s = s0.clone().requires_grad_()
            distillation_loss(s, t, temperature=temperature).backward()
            norms[temperature] = float(s.grad.norm())
        ratio = norms[2.0] / norms[8.0]
        assert 1 / 1.5 < ratio < 1.5, (n_classes, ratio)


def test_large_logits_are_stable():
    t = torch.tensor([[1e4, 0.0, -1e4], [3e3, 3e3, -5e3]])
    s = torch.tensor([[0.0, 1e4, -1e4], [3e3, 2.9e3, -5e3]], requires_grad=True)
    loss = distillation_loss(s, t, temperature=1.0)
    loss.backward()
    assert math.isfinite(loss.item()) and torch.isfinite(s.grad).all()
    assert loss.item() == pytest.approx(_kd_ref(s.detach().numpy(), t.numpy(), 1.0), rel=1e-5)


def test_half_precision_inputs_are_computed_in_float32(rng):
    s, t = _logits(7, (6, 11), 2.0)
    s16, t16 = torch.from_numpy(s).half(), torch.from_numpy(t).bfloat16()
    got = distillation_loss(s16, t16, temperature=3.0)
    assert got.dtype == torch.float32
    expected = _kd_ref(s16.float().numpy(), t16.float().numpy(), 3.0)
    assert float(got) == pytest.approx(expected, rel=1e-5)


def test_empty_batch_gives_zero_loss_that_backpropagates():
    s = torch.empty(0, 5, requires_grad=True)
    t = torch.empty(0, 5)
    for loss in (distillation_loss(s, t), distillation_loss(s, t, alpha=0.3, labels=torch.empty(0, dtype=torch.long)),
                 embedding_distillation_loss(s, t), embedding_distillation_loss(s, t, kind="mse")):
        assert loss.item() == 0.0 and loss.grad_fn is not None
        loss.backward()
        assert s.grad.shape == (0, 5)
    s3 = torch.empty(2, 0, 5, requires_grad=True)  # a batch of empty sequences
    assert distillation_loss(s3, torch.empty(2, 0, 5)).item() == 0.0


def test_distillation_loss_errors():
    s, t = torch.randn(4, 5), torch.randn(4, 5)
    with pytest.raises(ValueError, match=r"\(4, 5\) vs \(4, 6\)"):
        distillation_loss(s, torch.randn(4, 6))
    for bad in (0.0, -1.0, float("inf"), float("nan")):
        with pytest.raises(ValueError, match="temperature"):
            distillation_loss(s, t, temperature=bad)
    with pytest.raises(TypeError, match="floating-point"):
        distillation_loss(s.long(), t)
    with pytest.raises(TypeError, match="floating-point"):
        distillation_loss(s, t.int())
    with pytest.raises(TypeError, match="torch.Tensor"):
        distillation_loss(s.numpy(), t)
    with pytest.raises(ValueError, match="needs labels"):
        distillation_loss(s, t, alpha=0.5)
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        distillation_loss(s, t, alpha=1.5, labels=torch.zeros(4, dtype=torch.long))
    with pytest.raises(ValueError, match=r"in \[0, 5\)"):
        distillation_loss(s, t, alpha=0.5, labels=torch.tensor([0, 1, 5, 2]))
    with pytest.raises(TypeError, match="integer"):
        distillation_loss(s, t, alpha=0.5, labels=torch.zeros(4))
    with pytest.raises(ValueError, match="labels shape"):
        distillation_loss(s, t, alpha=0.5, labels=torch.zeros(3, dtype=torch.long))
    with pytest.raises(ValueError, match="0-d"):
        distillation_loss(torch.tensor(1.0), torch.tensor(2.0))
    for who, a, b in (("teacher", s, t.clone().index_put_((torch.tensor([1]),), torch.tensor(float("nan")))),
                      ("student", s.clone().index_put_((torch.tensor([2]),), torch.tensor(float("-inf"))), t)):
        with pytest.raises(ValueError, match=f"{who} logits contain NaN or infinity"):
            distillation_loss(a, b)


# --------------------------------------------------------------------------------------------
# embedding_distillation_loss


@given(shape=shapes, seed=st.integers(0, 2**32 - 1), scale=st.floats(0.01, 100.0), kind=st.sampled_from(["cosine", "mse"]))
def test_embedding_loss_matches_numpy(shape, seed, scale, kind):
    s, t = _logits(seed, shape, scale)
    expected = _embedding_ref(s, t, kind)
    ts = torch.from_numpy(t).requires_grad_()
    got = embedding_distillation_loss(torch.from_numpy(s).requires_grad_(), ts, kind=kind)
    assert got.item() == pytest.approx(expected, rel=1e-5, abs=1e-6)
    got.backward()
    assert ts.grad is None
    tt = torch.from_numpy(t)
    assert float(embedding_distillation_loss(tt, tt.clone(), kind=kind)) == pytest.approx(0.0, abs=1e-6)


def test_embedding_loss_errors():
    s = torch.randn(3, 4)
    with pytest.raises(ValueError, match=r"\(3, 4\) vs \(3, 5\)"):
        embedding_distillation_loss(s, torch.randn(3, 5))
    with pytest.raises(ValueError, match="kind"):
        embedding_distillation_loss(s, s, kind="l1")
    with pytest.raises(TypeError, match="floating-point"):
        embedding_distillation_loss(s.long(), s.long())
    with pytest.raises(ValueError, match="teacher embeddings contain NaN"):
        embedding_distillation_loss(s, s.clone().fill_(float("nan")))


# --------------------------------------------------------------------------------------------
# distill() and agreement()


def _mlp(seed: int, hidden: int, out: int = 10, gain: float = 1.0) -> nn.Module:
    torch.manual_seed(seed)
    m = nn.Sequential(nn.Linear(32, hidden), nn.ReLU(), nn.Linear(hidden, out))
    with torch.no_grad():
        m[2].weight.mul_(gain)  # a teacher with confident (not near-uniform) predictions
    return m


def _inputs(rng, n: int) -> torch.Tensor:
    return torch.from_numpy(rng.standard_normal((n, 32)).astype(np.float32))


def _batches(x: torch.Tensor, size: int = 32) -> list[torch.Tensor]:
    return [x[i:i + size] for i in range(0, x.shape[0], size)]


def _state(m: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in m.state_dict().items()}


def _same(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_distill_learns_the_teacher_and_leaves_it_untouched(rng):
    teacher, student = _mlp(0, 128, gain=4.0), _mlp(1, 16)
    data, held_out = _batches(_inputs(rng, 384)), [_inputs(rng, 512)]
    teacher.train()  # distill must switch it to eval for the run and back afterwards
    student.eval()
    student[1].train()  # a deliberate mix of flags comes back as it was
    teacher_before = _state(teacher)
    seen = []
    for name, m in (("teacher", teacher), ("student", student)):
        m.register_forward_pre_hook(lambda mod, args, name=name: seen.append((name, mod.training, torch.is_grad_enabled())))
    before = agreement(student, teacher, held_out)
    seen.clear()
    result = distill(student, teacher, data, epochs=6, lr=1e-2, temperature=2.0)
    assert isinstance(result, DistillResult) and result.steps == 6 * len(data) and not result.stopped_early
    assert len(result.losses) == result.steps and len(result.history) == 6
    assert result.history[-1] < 0.5 * result.history[0]
    assert result.initial_loss == result.losses[0] and result.final_loss == result.losses[-1]
    assert set(seen) == {("teacher", False, False), ("student", True, True)}
    assert _same(_state(teacher), teacher_before)
    assert teacher.training and all(m.training for m in teacher.modules())
    assert [m.training for m in student.modules()] == [False, False, True, False]
    after = agreement(student, teacher, held_out)
    assert after["top1_agreement"] >= before["top1_agreement"] + 0.3
    assert after["cosine_mean"] > before["cosine_mean"] + 0.5
    assert after["rows"] == 512


def test_distill_with_labels_mixes_in_cross_entropy(rng):
    teacher, student = _mlp(0, 128, gain=4.0), _mlp(1, 16)
    x = _inputs(rng, 256)
    labels = torch.from_numpy(rng.integers(0, 10, 256))  # not the teacher's: the CE term must matter
    data = [(x[i:i + 32], labels[i:i + 32]) for i in range(0, 256, 32)]
    before = agreement(student, teacher, data, labels=True)
    result = distill(student, teacher, data, epochs=6, lr=1e-2, alpha=0.5, labels=True)
    after = agreement(student, teacher, data, labels=True)
    assert result.history[-1] < result.history[0]
    assert after["student_accuracy"] > before["student_accuracy"] + 0.1
    assert after["top1_agreement"] > before["top1_agreement"] + 0.1
    # the first step's loss is the documented mix, computed on the untouched student
    s0, t0 = _mlp(1, 16), _mlp(0, 128, gain=4.0)
    with torch.no_grad():
        first = _kd_ref(s0(x[:32]).numpy(), t0(x[:32]).numpy(), 2.0, 0.5, labels[:32].numpy())
    assert result.losses[0] == pytest.approx(first, rel=1e-5)


@pytest.mark.parametrize("kind", ["mse", "cosine"])
def test_distill_embeddings(kind, rng):
    teacher, student = _mlp(0, 64, out=16), _mlp(1, 8, out=16)
    data = _batches(_inputs(rng, 384))
    result = distill(student, teacher, data, epochs=5, lr=1e-2, loss=kind)
    assert result.history[-1] < 0.5 * result.history[0]


def test_callback_stops_early_and_max_steps(rng):
    data = _batches(_inputs(rng, 256))
    calls = []
    result = distill(_mlp(1, 16), _mlp(0, 64), data, epochs=3,
                     callback=lambda step, loss: calls.append((step, loss)) or step < 3)
    assert result.steps == 3 and result.stopped_early and [c[0] for c in calls] == [1, 2, 3]
    assert [c[1] for c in calls] == result.losses and len(result.history) == 1
    result = distill(_mlp(1, 16), _mlp(0, 64), data, epochs=3, max_steps=10)
    assert result.steps == 10 and result.stopped_early and len(result.history) == 2  # 8 + 2 steps


def test_non_finite_loss_stops_before_the_update(rng):
    teacher, student = _mlp(0, 64), _mlp(1, 16)

    class NaNOnSecondCall(nn.Module):
        def __init__(self, inner: nn.Module) -> None:
            super().__init__()
            self.inner, self.calls = inner, 0

        def forward(self, x):
            self.calls += 1
            y = self.inner(x)
            return y.clone().fill_(float("nan")) if self.calls == 2 else y

    after_step1 = {}
    student.eval()
    with pytest.raises(FloatingPointError, match=r"step 2 .*teacher output contains NaN"):
        distill(student, NaNOnSecondCall(teacher), _batches(_inputs(rng, 128)), lr=1e-2,
                callback=lambda step, loss: after_step1.update(_state(student)) if step == 1 else None)
    assert after_step1 and not _same(after_step1, _state(_mlp(1, 16)))  # step 1 did update
    assert _same(_state(student), after_step1)
    assert not student.training


def test_a_failing_model_names_the_step_and_restores_modes(rng):
    class Boom(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.lin, self.calls = nn.Linear(32, 10), 0

        def forward(self, x):
            self.calls += 1
            if self.calls == 3:
                raise KeyError("bad token")
            return self.lin(x)

    student, teacher = Boom(), _mlp(0, 64)
    student.eval()
    teacher.train()
    with pytest.raises(RuntimeError, match="student model failed at step 3") as info:
        distill(student, teacher, _batches(_inputs(rng, 128)))
    assert isinstance(info.value.__cause__, KeyError)
    assert not student.training and teacher.training


def test_empty_data_changes_nothing(rng):
    teacher, student = _mlp(0, 64), _mlp(1, 16)
    before = _state(student)
    for data, epochs in (([], 3), (_batches(_inputs(rng, 64)), 0)):
        result = distill(student, teacher, data, epochs=epochs)
        assert result.steps == 0 and result.history == [] and result.losses == []
        assert result.initial_loss is None and result.final_loss is None
    assert _same(_state(student), before) and all(p.grad is None for p in student.parameters())
    x = _inputs(rng, 64)
    result = distill(student, teacher, [x[:0], x[:32], x[:0], x[32:]])  # empty batches are not steps
    assert result.steps == 2 and len(result.losses) == 2
    with pytest.raises(ValueError, match="no outputs"):
        agreement(student, teacher, [])


def test_batches_as_tuples_dicts_and_output_mapping(rng):
    class Two(nn.Module):
        def __init__(self, seed: int, hidden: int) -> None:
            super().__init__()
            self.mlp = _mlp(seed, hidden)

        def forward(self, x, scale):
            return {"logits": self.mlp(x) * scale}

    x = _inputs(rng, 64)
    scale = torch.tensor(2.0)
    teacher, student = Two(0, 64), Two(1, 16)
    pick = lambda o: o["logits"]  # noqa: E731
    r1 = distill(student, teacher, [(x, scale)], output=pick)
    r2 = distill(copy.deepcopy(student), teacher, [{"x": x, "scale": scale}], output=pick)
    assert r1.steps == r2.steps == 1
    with pytest.raises(TypeError, match="output="):
        distill(student, teacher, [(x, scale)])


def test_grad_clip_bounds_the_update(rng):
    teacher, student = _mlp(0, 64, gain=4.0), _mlp(1, 16)
    before = torch.cat([p.detach().flatten().clone() for p in student.parameters()])
    opt = torch.optim.SGD(student.parameters(), lr=1.0)
    distill(student, teacher, _batches(_inputs(rng, 32)), optimizer=opt, grad_clip=1e-3)
    after = torch.cat([p.detach().flatten() for p in student.parameters()])
    assert 0 < float((after - before).norm()) <= 1e-3 * (1 + 1e-4)


def test_callable_loss(rng):
    teacher, student = _mlp(0, 64), _mlp(1, 16)
    got = []

    def loss(s, t):
        got.append((s.requires_grad, t.requires_grad))
        return ((s - t) ** 2).sum(-1).mean()

    result = distill(student, teacher, _batches(_inputs(rng, 64)), loss=loss, epochs=2)
    assert result.steps == 4 and set(got) == {(True, False)}
    with pytest.raises(TypeError, match="scalar"):
        distill(student, teacher, _batches(_inputs(rng, 32)), loss=lambda s, t: s - t)


def test_distill_argument_errors(rng):
    teacher, student = _mlp(0, 64), _mlp(1, 16)
    data = _batches(_inputs(rng, 64))
    with pytest.raises(ValueError, match="same module"):
        distill(teacher, teacher, data)
    shared = _mlp(2, 16)
    shared[0] = teacher[0]
    with pytest.raises(ValueError, match="share parameters or buffers"):
        distill(shared, teacher, data)
    bn_teacher = nn.Sequential(nn.Linear(32, 10), nn.BatchNorm1d(10))
    bn_student = nn.Sequential(nn.Linear(32, 10), nn.BatchNorm1d(10))
    bn_student[1].running_mean = bn_teacher[1].running_mean  # train mode would update it in place
    with pytest.raises(ValueError, match="running_mean"):
        distill(bn_student, bn_teacher, data)
    with pytest.raises(ValueError, match="needs labels"):
        distill(student, teacher, data, alpha=0.5)
    with pytest.raises(ValueError, match="temperature"):
        distill(student, teacher, data, temperature=0)
    with pytest.raises(ValueError, match="loss must be"):
        distill(student, teacher, data, loss="kld")
    with pytest.raises(ValueError, match="loss='kl' only"):
        distill(student, teacher, data, loss="mse", alpha=0.5, labels=True)
    with pytest.raises(ValueError, match="one-shot iterator"):
        distill(student, teacher, iter(data), epochs=2)
    with pytest.raises(ValueError, match=r"pair \(inputs, labels\)"):
        distill(student, teacher, data, labels=True)
    with pytest.raises(RuntimeError, match=r"loss failed at step 1.*\(32, 10\) vs \(32, 16\)"):
        distill(student, _mlp(0, 64, out=16), data)
    with pytest.raises(TypeError, match="nn.Module"):
        distill(lambda x: x, teacher, data)
    assert _same(_state(student), _state(_mlp(1, 16)))  # every failure above came before an update


def test_agreement_matches_compare_on_the_concatenated_outputs(rng):
    teacher, student = _mlp(0, 64, gain=4.0), _mlp(1, 16)
    x = _inputs(rng, 100)
    got = agreement(student, teacher, _batches(x, 24))  # uneven batches: 24, 24, 24, 24, 4
    with torch.no_grad():
        expected = compare(teacher(x), student(x))
    for k, v in expected.items():
        assert got[k] == pytest.approx(v, rel=1e-9, abs=1e-12), k
    same = agreement(teacher, teacher, _batches(x, 24))
    assert same["top1_agreement"] == 1.0 and same["cosine_min"] == pytest.approx(1.0, abs=1e-6)


@settings(max_examples=20)
@given(seed=st.integers(0, 2**32 - 1), rows=st.integers(1, 6), seq=st.integers(1, 4))
def test_sequence_logits_in_distill_match_the_loss(seed, rows, seq):
    # [b, s, C] outputs: every (b, s) position is a row, in distill as in the loss
    g = np.random.default_rng(seed)
    x = torch.from_numpy(g.standard_normal((rows, seq, 32)).astype(np.float32))
    teacher, student = _mlp(0, 32), _mlp(1, 8)
    with torch.no_grad():
        expected = float(distillation_loss(student(x), teacher(x), temperature=3.0))
    result = distill(student, teacher, [x], temperature=3.0)
    assert result.losses[0] == pytest.approx(expected, rel=1e-6)


def test_pruned_student_keeps_its_pattern_and_recovers(rng):
    from pyperfcore import quant

    teacher = _mlp(0, 128, gain=4.0)
    student = copy.deepcopy(teacher)
    quant.prune(student, "2:4")
    masks = {n: m.weight.detach() != 0 for n, m in student.named_modules() if isinstance(m, nn.Linear)}
    data, held_out = _batches(_inputs(rng, 384)), [_inputs(rng, 512)]
    before = agreement(student, teacher, held_out)
    free = copy.deepcopy(student)
    distill(student, teacher, data, epochs=4, lr=3e-3, keep_sparsity=True)
    for n, m in student.named_modules():
        if isinstance(m, nn.Linear):
            w = m.weight.detach()
            assert torch.equal(w != 0, masks[n]), n  # the same entries, no more, no fewer
    assert all(v == pytest.approx(0.5) for v in quant.sparsity(student).values())
    assert agreement(student, teacher, held_out)["cosine_mean"] > before["cosine_mean"]
    # without keep_sparsity AdamW moves the pruned entries (this is what the flag is for)
    distill(free, teacher, data, epochs=1, lr=3e-3)
    assert quant.sparsity(free)["0"] < 0.01
