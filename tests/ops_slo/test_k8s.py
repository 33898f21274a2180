"""Generated Kubernetes objects checked offline: Argo Rollouts / Flagger against their CRD facts,
the HPA and the Rollout's pod template against the official Kubernetes OpenAPI schemas shipped
by kubernetes-validate; mutations of valid objects are caught; per-region rollout specs."""
from __future__ import annotations

import copy

import pytest
from hypothesis import given, settings, strategies as st

from pyperfcore.ops import k8s
from pyperfcore.ops import release as R
from pyperfcore.ops.capacity import Plan, hpa_spec

try:  # the official Kubernetes schemas (test extra); the CRD checks run without it
    import kubernetes_validate as kv
except ImportError:  # pragma: no cover - depends on the environment
    kv = None


@pytest.fixture
def official():
    if kv is None:
        pytest.skip("kubernetes-validate (test extra) holds the official Kubernetes schemas")
    return kv

PLAN = Plan(max_batch_size=16, max_delay_ms=2.0, replicas=3, p99_ms=20.0, mean_batch=8.0,
            busy_fraction=0.5, cost_per_1k=None, meets_slo=True)


def _generated():
    return {
        "analysis_template": R.argo_analysis_template("clf-analysis", "clf", p99_seconds=0.25),
        "rollout": R.argo_rollout("clf", "registry.example/clf:7",
                                  analysis_template="clf-analysis"),
        "canary": R.flagger_canary("clf", autoscaler="clf"),
        "hpa": hpa_spec("clf", PLAN),
        "hpa_rollout": hpa_spec("clf", PLAN, target="Rollout"),
    }


def test_generated_crd_objects_are_valid_without_the_official_schemas():
    for name, obj in _generated().items():
        if obj["kind"] != "HorizontalPodAutoscaler":
            assert k8s.validate(obj, core=False) is obj, name
    with pytest.raises(ValueError, match="core object"):
        k8s.validate(hpa_spec("clf", PLAN), core=False)


@pytest.mark.parametrize("version", ["1.25", "1.30", "1.37"])
def test_generated_objects_are_valid(official, version):
    for name, obj in _generated().items():
        assert k8s.validate(obj, core=True, version=version) is obj, name
    # the official schema really is consulted: the HPA as generated passes strict validation
    assert official.validate(hpa_spec("clf", PLAN), version, strict=True)


def _raises(obj, *fragments, core=True):
    with pytest.raises(k8s.SpecError) as ei:
        k8s.validate(obj, core=core)
    text = str(ei.value)
    for f in fragments:
        assert f in text, text
    return ei.value


def test_crd_violations_are_reported_with_their_path():
    g = _generated()
    core = kv is not None
    at = copy.deepcopy(g["analysis_template"])
    del at["spec"]["metrics"][0]["provider"]
    at["spec"]["metrics"][1]["failureLimit"] = 1.5  # int-or-string, never a float
    e = _raises(at, "spec.metrics[0].provider: required", "spec.metrics[1].failureLimit",
                core=core)
    assert len(e.errors) == 2
    at = copy.deepcopy(g["analysis_template"])
    del at["spec"]["metrics"]
    _raises(at, "spec.metrics: required", core=core)

    ro = copy.deepcopy(g["rollout"])
    ro["spec"]["strategy"]["canary"]["steps"][0] = {"setWeight": "5"}
    ro["spec"]["strategy"]["canary"]["steps"][1]["pause"]["duration"] = 1.5
    ro["spec"]["strategy"]["canary"]["setWeigth"] = 5
    ro["spec"]["replicas"] = True  # a bool is not an integer in JSON
    _raises(ro, "steps[0].setWeight: must be integer", "pause.duration",
            "canary.setWeigth: unknown field", "spec.replicas: must be integer", core=core)
    ro = copy.deepcopy(g["rollout"])
    ro["spec"]["replicas"] = 2 ** 31
    _raises(ro, "does not fit int32", core=core)
    if core:  # the pod template is checked against the official schema
        ro = copy.deepcopy(g["rollout"])
        ro["spec"]["template"]["spec"]["containers"][0]["ports"][0]["containerPort"] = "8080"
        _raises(ro, "spec.template (as apps/v1 Deployment)", "containerPort")
    ro = copy.deepcopy(g["rollout"])
    ro["spec"]["selector"]["matchLabels"] = {"app": "other"}
    _raises(ro, "does not match spec.template.metadata.labels", core=core)

    ca = copy.deepcopy(g["canary"])
    ca["spec"]["targetRef"]["kind"] = "StatefulSet"
    ca["spec"]["analysis"]["interval"] = "1h"
    _raises(ca, "targetRef.kind: 'StatefulSet' is not one of", "interval: '1h' does not match",
            core=core)
    ca = copy.deepcopy(g["canary"])
    ca["spec"]["analysis"]["stepWeight"] = 10  # with stepWeights: two of the oneOf sets
    _raises(ca, "exactly one of the field sets", "(2 present)", core=core)
    ca = copy.deepcopy(g["canary"])
    del ca["spec"]["analysis"]["stepWeights"]
    _raises(ca, "(none present)", core=core)
    ca = copy.deepcopy(g["canary"])
    del ca["spec"]["service"]["port"]
    ca["spec"]["autoscalerRef"]["kind"] = "Deployment"
    _raises(ca, "spec.service.port: required", "autoscalerRef.kind", core=core)
    with pytest.raises(ValueError, match="below 100"):
        R.flagger_canary("clf", steps=(100,))


def test_core_violations_come_from_the_official_schema(official):
    g = _generated()
    h = copy.deepcopy(g["hpa"])
    h["spec"]["maxReplicas"] = "9"
    _raises(h, "spec.maxReplicas", "not of type 'integer'")
    h = copy.deepcopy(g["hpa"])
    h["spec"]["metrics"][0]["pods"]["target"]["averageVelue"] = "16"  # strict: unknown field
    _raises(h, "averageVelue")
    h = copy.deepcopy(g["hpa"])
    del h["spec"]["scaleTargetRef"]
    _raises(h, "scaleTargetRef")
    h = copy.deepcopy(g["hpa"])
    h["metadata"]["name"] = "Clf_Model"
    _raises(h, "not a DNS-1123 subdomain")
    h = copy.deepcopy(g["hpa"])
    h["metadata"]["labels"] = {"team": "ml ops"}
    _raises(h, "not a valid label value")
    with pytest.raises(ValueError, match="target"):
        hpa_spec("clf", PLAN, target="StatefulSet")
    with pytest.raises(ValueError, match="don't know"):
        k8s.validate({"apiVersion": "example.com/v1", "kind": "Thing"}, core=False)
    with pytest.raises(TypeError):
        k8s.validate([1, 2])


def _leaves(o, path=()):
    if isinstance(o, dict):
        for k, v in o.items():
            yield from _leaves(v, path + (k,))
    elif isinstance(o, list):
        for i, v in enumerate(o):
            yield from _leaves(v, path + (i,))
    else:
        yield path


_OBJECTS = _generated()
_LEAVES = [(name, p) for name, obj in _OBJECTS.items() for p in _leaves(obj)
           if p[:1] != ("apiVersion",) and p[:1] != ("kind",)]


@settings(max_examples=60, deadline=None)
@given(st.sampled_from(_LEAVES), st.sampled_from([{"x": [1]}, [["nested"]]]))  # null = absent in k8s
def test_any_leaf_replaced_by_a_wrong_kind_of_value_is_caught(leaf, bad):
    if kv is None:
        pytest.skip("kubernetes-validate (test extra) holds the official Kubernetes schemas")
    name, path = leaf
    obj = copy.deepcopy(_OBJECTS[name])
    cur = obj
    for p in path[:-1]:
        cur = cur[p]
    cur[path[-1]] = bad
    with pytest.raises(k8s.SpecError):
        k8s.validate(obj, core=True)


@settings(max_examples=25, deadline=None)
@given(st.from_regex(r"[a-z][a-z0-9]{0,10}(-[a-z0-9]{1,8})?", fullmatch=True),
       st.lists(st.integers(1, 99), min_size=1, max_size=5, unique=True),
       st.floats(0.0, 0.5), st.floats(0.001, 10.0), st.integers(1, 50),
       st.sampled_from(["30s", "1m", "5m"]))
def test_generators_always_produce_valid_objects(name, steps, err, p99, replicas, interval):
    if kv is None:
        pytest.skip("kubernetes-validate (test extra) holds the official Kubernetes schemas")
    steps = sorted(steps) + [100]
    objs = [R.argo_analysis_template(f"{name}-analysis", name, max_error_ratio=err,
                                     p99_seconds=p99, interval=interval),
            R.argo_rollout(name, f"registry.example/{name}:1", steps=steps,
                           analysis_template=f"{name}-analysis", replicas=replicas),
            R.flagger_canary(name, steps=steps, interval=interval, autoscaler=name,
                             max_duration_ms=p99 * 1e3, min_success_pct=100 * (1 - err)),
            hpa_spec(name, Plan(replicas, 1.0, replicas, 1.0, 1.0, 0.5, None, True))]
    for o in objs:
        k8s.validate(o, core=True)


def test_regional_specs_one_set_per_region_with_the_failover_endpoint(official):
    eps = {"eu-west": "https://eu-west.example/clf", "us-east": "https://us-east.example/clf",
           "ap-south": "https://ap-south.example/clf"}
    order = ["eu-west", "us-east", "ap-south"]
    fo = {"eu-west": ["us-east"], "us-east": ["eu-west", "ap-south"], "ap-south": ["us-east"]}
    prom = {r: f"http://prometheus.{r}:9090" for r in order}
    specs = k8s.regional_specs("clf", "registry.example/clf:8", order, failover=fo, endpoints=eps,
                               prometheus=prom, namespace="serving")
    assert list(specs) == order
    for i, r in enumerate(order):
        at, ro = specs[r]
        assert (at["kind"], ro["kind"]) == ("AnalysisTemplate", "Rollout")
        for o in (at, ro):
            k8s.validate(o, core=True)
            md = o["metadata"]
            assert md["namespace"] == "serving" and md["labels"]["pyperfcore.io/region"] == r
            a = md["annotations"]
            assert a["pyperfcore.io/rollout-order"] == f"{i + 1}/3"
            assert a["pyperfcore.io/after-region"] == (order[i - 1] if i else "")
            assert a["pyperfcore.io/failover-regions"] == ",".join(fo[r])
            assert a["pyperfcore.io/failover-endpoint"] == eps[fo[r][0]]
            assert a["pyperfcore.io/endpoint"] == eps[r]
        # the Rollout's analysis names this region's template, which asks this region's Prometheus
        assert ro["spec"]["strategy"]["canary"]["analysis"]["templates"][0]["templateName"] == \
            at["metadata"]["name"]
        assert {m["provider"]["prometheus"]["address"] for m in at["spec"]["metrics"]} == {prom[r]}
    fl = k8s.regional_specs("clf", "img", order, failover=fo, endpoints=eps, engine="flagger",
                            hpa="clf", prometheus=prom)
    for r in order:
        (ca,) = fl[r]
        k8s.validate(ca, core=True)
        assert ca["spec"]["metricsServer"] == prom[r]
        assert ca["spec"]["autoscalerRef"]["name"] == "clf"
        assert ca["metadata"]["annotations"]["pyperfcore.io/failover-endpoint"] == eps[fo[r][0]]
    with pytest.raises(ValueError, match="no endpoint"):
        k8s.regional_specs("clf", "img", ["eu-west"], failover={"eu-west": ["mars"]},
                           endpoints=eps)
    with pytest.raises(ValueError, match="itself"):
        k8s.regional_specs("clf", "img", ["eu-west"], failover={"eu-west": ["eu-west"]},
                           endpoints=eps)
    with pytest.raises(ValueError, match="label value"):
        k8s.regional_specs("clf", "img", ["eu west"])
    with pytest.raises(ValueError, match="distinct"):
        k8s.regional_specs("clf", "img", ["a", "a"])
    with pytest.raises(ValueError, match="engine"):
        k8s.regional_specs("clf", "img", ["a"], engine="spinnaker")
