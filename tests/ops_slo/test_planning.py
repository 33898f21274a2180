"""Memory planning (footprint, sharding plan, placement) on small torch modules, and the
ensemble check."""
from __future__ import annotations

import itertools
import math

import numpy as np
import pytest

from pyperfcore.ops import ensemble as E

torch = pytest.importorskip("torch")
from torch import nn  # noqa: E402

from pyperfcore.ops import memory as MP  # noqa: E402


def _mlp():
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(64, 256), nn.GELU(), nn.Linear(256, 512), nn.GELU(),
                         nn.Linear(512, 128), nn.BatchNorm1d(128), nn.Linear(128, 10)).eval()


def test_footprint_counts_weights_buffers_and_activations_exactly():
    m = _mlp()
    fp = MP.footprint(m, (64,), batch_size=32)
    f4 = 4
    assert fp.weight_bytes == f4 * ((64 * 256 + 256) + (256 * 512 + 512) + (512 * 128 + 128)
                                    + 2 * 128 + (128 * 10 + 10))
    assert fp.buffer_bytes == f4 * 2 * 128 + 8  # running mean/var (fp32), num_batches (int64)
    outs = [256, 256, 512, 512, 128, 128, 10]
    ins = [64] + outs[:-1]
    assert [u.name for u in fp.units] == [str(i) for i in range(7)]
    assert [u.output_bytes for u in fp.units] == [32 * o * f4 for o in outs]
    assert [u.input_bytes for u in fp.units] == [32 * i * f4 for i in ins]
    assert fp.peak_activation_bytes == 32 * f4 * (512 + 512)
    assert fp.total_activation_bytes == 32 * f4 * (64 + sum(outs))
    # activations scale with the batch, weights do not
    fp2 = MP.footprint(m, (64,), batch_size=64)
    assert fp2.peak_activation_bytes == 2 * fp.peak_activation_bytes
    assert fp2.weight_bytes == fp.weight_bytes
    # fp16 input: activations halve (on meta, Linear keeps the input dtype? it must match the
    # weights, so plan a half model with half inputs)
    fp16 = MP.footprint(_mlp().half(), (64,), batch_size=32, dtype=torch.float16)
    assert fp16.weight_bytes * 2 == fp.weight_bytes
    assert fp16.peak_activation_bytes * 2 == fp.peak_activation_bytes
    # the model was not touched (copied to meta for the run)
    assert next(m.parameters()).device.type == "cpu"
    with pytest.raises(ValueError, match="batch_size"):
        MP.footprint(m, (64,), batch_size=0)
    with pytest.raises(TypeError):
        MP.footprint(lambda x: x, (64,))
    with pytest.raises(KeyError, match="nope"):
        MP.footprint(m, (64,), units=["nope"])


def _brute_force_ok(fp, caps, reserve):
    """Does some contiguous split over the devices, in order (a device may get nothing), fit?"""
    n, devs = len(fp.units), list(caps)
    for cuts in itertools.combinations_with_replacement(range(0, n + 1), len(devs) - 1):
        bounds = [0, *cuts, n]
        ok = True
        for d, (a, b) in zip(devs, zip(bounds, bounds[1:])):
            us = fp.units[a:b]
            need = sum(u.param_bytes for u in us) + max([u.activation_bytes for u in us] + [0])
            if need > int(caps[d] * (1 - reserve)):
                ok = False
        if ok:
            return True
    return False


def test_shard_plan_respects_capacities_and_places_a_working_module():
    m = _mlp()
    x = torch.randn(32, 64)
    want = m(x)
    fp = MP.footprint(m, (64,), batch_size=32)
    big = fp.inference_bytes * 2
    plan = MP.shard_plan(m, (64,), {"gpu0": big, "gpu1": big}, batch_size=32)
    assert plan.devices() == ["gpu0"]  # fits on one: one device
    # three small fake devices: the plan must split, in order, within each budget
    cap = int(fp.inference_bytes * 0.75)
    caps = {"gpu0": cap, "gpu1": cap, "gpu2": cap}
    plan = MP.shard_plan(m, (64,), caps, batch_size=32, reserve=0.1, fp=fp)
    devs = list(plan.assignments.values())
    assert list(plan.assignments) == [u.name for u in fp.units]
    assert devs == sorted(devs) and len(set(devs)) >= 2  # contiguous, in device order
    for d in set(devs):
        us = [u for u in fp.units if plan.assignments[u.name] == d]
        need = sum(u.param_bytes for u in us) + max(u.activation_bytes for u in us)
        assert need == plan.device_bytes[d] <= cap * 0.9
    # place it (all fake devices are the CPU here) and check the output is unchanged and that
    # the inputs really go through the placement hooks
    moved = []
    m2, handles = MP.place(m, plan, devices={d: "cpu" for d in caps})
    for name in plan.assignments:
        dict(m2.named_modules())[name].register_forward_pre_hook(
            lambda mod, args, name=name: moved.append(name))
    got = m2(x)
    assert torch.allclose(got, want) and moved == list(plan.assignments)
    assert len(handles) == len(plan.assignments)
    for h in handles:
        h.remove()
    # too small everywhere: a clear error naming the unit
    with pytest.raises(ValueError, match="unit '2'"):
        MP.shard_plan(m, (64,), {"a": 300_000, "b": 300_000}, batch_size=32, fp=fp)
    with pytest.raises(ValueError, match="does not fit"):
        MP.shard_plan(m, (64,), {"a": 600_000}, batch_size=32, fp=fp)
    with pytest.raises(ValueError, match="capacity"):
        MP.shard_plan(m, (64,), {"a": -1}, fp=fp)


@pytest.mark.parametrize("seed", range(6))
def test_greedy_plan_agrees_with_brute_force_on_feasibility(seed):
    rng = np.random.default_rng(seed)
    widths = rng.integers(8, 200, size=rng.integers(3, 7))
    layers = []
    for a, b in zip(widths[:-1], widths[1:]):
        layers += [nn.Linear(int(a), int(b)), nn.ReLU()]
    m = nn.Sequential(*layers).eval()
    fp = MP.footprint(m, (int(widths[0]),), batch_size=int(rng.integers(1, 64)))
    for _ in range(4):
        caps = {f"d{i}": int(fp.inference_bytes * rng.uniform(0.2, 0.9)) for i in range(3)}
        feasible = _brute_force_ok(fp, caps, 0.1)
        try:
            MP.shard_plan(m, None, caps, fp=fp)
            got = True
        except ValueError:
            got = False
        assert got == feasible, (caps, fp.to_dict())


def test_ensemble_check_finds_the_member_that_adds_nothing():
    rng = np.random.default_rng(0)
    n, k = 3000, 3
    y = rng.integers(0, k, n)

    def noisy(acc, seed):
        r = np.random.default_rng(seed)
        right = r.random(n) < acc
        pred = np.where(right, y, (y + r.integers(1, k, n)) % k)
        p = np.full((n, k), 0.1)
        p[np.arange(n), pred] = 0.8
        return p

    a, b, c = noisy(0.80, 1), noisy(0.78, 2), noisy(0.76, 3)
    dup = a.copy()  # a duplicate of member a adds nothing on its own
    res = E.ensemble_check({"a": a, "b": b, "c": c, "a_copy": dup}, y,
                           latency_ms={"a": 2.0, "b": 3.0, "c": 8.0, "a_copy": 2.0},
                           cost_per_1k={"a": 0.01, "b": 0.02, "c": 0.05, "a_copy": 0.01})
    rows = res["members"]
    assert res["best_single"] == "a"
    assert res["ensemble_latency_ms"] == 8.0 and res["ensemble_cost_per_1k"] == pytest.approx(0.09)
    # leave-one-out accuracies match a direct recomputation
    for name in rows:
        rest = [p for m, p in {"a": a, "b": b, "c": c, "a_copy": dup}.items() if m != name]
        allp = [a, b, c, dup]
        acc_full = (np.mean(allp, axis=0).argmax(1) == y).mean()
        acc_wo = (np.mean(rest, axis=0).argmax(1) == y).mean()
        assert rows[name]["marginal_accuracy"] == pytest.approx(acc_full - acc_wo)
        assert rows[name]["fixes"] - rows[name]["breaks"] == round((acc_full - acc_wo) * n)
    assert res["ensemble_accuracy"] > rows["a"]["accuracy"]
    assert rows["c"]["marginal_per_ms"] == pytest.approx(rows["c"]["marginal_accuracy"] / 8.0)
    assert {n for n, r in rows.items() if r["verdict"] == "keep"} <= {"a", "b", "c", "a_copy"}
    assert rows["b"]["verdict"] == "keep"
    # timed callables and validation
    res2 = E.ensemble_check({"a": lambda x: a, "b": lambda x: b}, y, inputs=np.zeros(n),
                            parallel=False)
    assert res2["ensemble_latency_ms"] is not None and res2["ensemble_latency_ms"] >= 0
    with pytest.raises(ValueError, match="at least two"):
        E.ensemble_check({"a": a}, y)
    with pytest.raises(ValueError, match="rows"):
        E.ensemble_check({"a": a, "b": b[:10]}, y)
    with pytest.raises(ValueError, match="non-finite"):
        E.ensemble_check({"a": a, "b": np.full_like(b, np.nan)}, y)


def test_mcnemar_exact_matches_scipy():
    from scipy.stats import binomtest

    for b, c in [(0, 0), (3, 9), (10, 10), (40, 12), (1, 30)]:
        want = 1.0 if b + c == 0 else binomtest(min(b, c), b + c, 0.5).pvalue
        assert E.mcnemar_exact(b, c) == pytest.approx(want, rel=1e-9)
    assert math.isclose(E.mcnemar_exact(5, 5), 1.0)
