"""Offline validation of the Kubernetes objects pyperfcore generates, and per-region rollout specs.

Nothing here talks to a cluster. Two checks, by what the object is:

* Argo Rollouts ``Rollout`` / ``AnalysisTemplate`` and Flagger ``Canary``: against the parts of
  their CRDs' ``openAPIV3Schema`` that the generators use, transcribed below (required fields,
  types, int-or-string, enums, patterns, ``oneOf`` required-sets). The CRD versions are named on
  each schema. The API server *prunes* unknown fields of a structural CRD without an error, so a
  misspelt field would silently disappear: here an unknown field is an error.
* Core objects (``autoscaling/v2`` HorizontalPodAutoscaler, ``apps/v1`` Deployment, and the pod
  template inside a Rollout, checked as the Deployment it mirrors): against the official
  Kubernetes OpenAPI schemas shipped by the ``kubernetes-validate`` package (strict mode: unknown
  fields are errors), when it is installed; ``core=True`` makes its absence an error.

``metadata`` is checked as the API server would for every kind: a ``name`` that is a DNS-1123
subdomain, label values and annotation/label keys in their syntax.
"""
from __future__ import annotations

import copy
import re
from typing import Any, Mapping, Sequence

__all__ = ["validate", "SpecError", "crd_errors", "core_errors", "regional_specs",
           "CRD_SCHEMAS", "KUBERNETES_VERSION"]

KUBERNETES_VERSION = "1.30"  # the API version core objects are checked against by default


class SpecError(ValueError):
    """A generated object would be rejected (or silently pruned) by the API server."""

    def __init__(self, kind: str, errors: Sequence[str]):
        self.kind, self.errors = kind, list(errors)
        super().__init__(f"{kind}: " + "; ".join(self.errors))


# ------------------------------------------------------------------------ CRD schema subsets
_S = {"type": "string"}
_B = {"type": "boolean"}
_I32 = {"type": "integer", "format": "int32"}
_NUM = {"type": "number"}
_IOS = {"x-kubernetes-int-or-string": True}
_ANY_OBJ = {"type": "object", "x-kubernetes-preserve-unknown-fields": True}
_STR_MAP = {"type": "object", "additionalProperties": _S}
_LABEL_SELECTOR = {"type": "object", "properties": {
    "matchLabels": _STR_MAP,
    "matchExpressions": {"type": "array", "items": {
        "type": "object", "required": ["key", "operator"],
        "properties": {"key": _S, "operator": _S, "values": {"type": "array", "items": _S}}}}}}
_ARGS = {"type": "array", "items": {"type": "object", "required": ["name"], "properties": {
    "name": _S, "value": _S, "valueFrom": _ANY_OBJ}}}
_ANALYSIS_TEMPLATES = {"type": "array", "items": {"type": "object", "properties": {
    "templateName": _S, "clusterScope": _B}}}
_ROLLOUT_ANALYSIS = {"type": "object", "properties": {
    "templates": _ANALYSIS_TEMPLATES, "args": _ARGS, "dryRun": {"type": "array", "items": _ANY_OBJ},
    "measurementRetention": {"type": "array", "items": _ANY_OBJ}}}

# argoproj/argo-rollouts manifests/crds/analysis-template-crd.yaml (apiextensions.k8s.io/v1,
# controller-gen v0.7.0, the v1.4-era CRD): spec.metrics required; each metric requires name and
# provider; count/failureLimit/inconclusiveLimit/consecutiveErrorLimit are int-or-string;
# provider.prometheus has address and query strings.
_ARGO_METRIC = {"type": "object", "required": ["name", "provider"], "properties": {
    "name": _S, "interval": _S, "initialDelay": _S, "count": _IOS, "failureLimit": _IOS,
    "inconclusiveLimit": _IOS, "consecutiveErrorLimit": _IOS, "successCondition": _S,
    "failureCondition": _S, "dryRun": _B,
    "provider": {"type": "object", "properties": {
        "prometheus": {"type": "object", "properties": {"address": _S, "query": _S}},
        "web": {"type": "object", "required": ["url"], "properties": {
            "url": _S, "method": _S, "body": _S, "jsonPath": _S, "insecure": _B,
            "timeoutSeconds": {"type": "integer", "format": "int64"},
            "headers": {"type": "array", "items": {"type": "object", "required": ["key", "value"],
                                                   "properties": {"key": _S, "value": _S}}}}},
        "job": _ANY_OBJ, "datadog": _ANY_OBJ, "newRelic": _ANY_OBJ, "wavefront": _ANY_OBJ,
        "cloudWatch": _ANY_OBJ, "graphite": _ANY_OBJ, "influxdb": _ANY_OBJ,
        "kayenta": _ANY_OBJ}}}}
ANALYSIS_TEMPLATE_SCHEMA = {"type": "object", "required": ["spec"], "properties": {
    "spec": {"type": "object", "required": ["metrics"], "properties": {
        "metrics": {"type": "array", "items": _ARGO_METRIC}, "args": _ARGS,
        "dryRun": {"type": "array", "items": _ANY_OBJ},
        "measurementRetention": {"type": "array", "items": _ANY_OBJ}}}}}

# argoproj/argo-rollouts manifests/crds/rollout-crd.yaml (apiextensions.k8s.io/v1, controller-gen
# v0.7.0, v1.4-era): root requires spec; spec has no required field (template or workloadRef);
# canary steps carry setWeight (int32), pause.duration (int-or-string), analysis, experiment,
# setCanaryScale, setHeaderRoute, setMirrorRoute; blueGreen requires activeService; the scale
# subresource makes a Rollout an HPA target. spec.template is the core PodTemplateSpec (checked
# against the official schema by core_errors).
_STEP = {"type": "object", "properties": {
    "setWeight": _I32, "pause": {"type": "object", "properties": {"duration": _IOS}},
    "analysis": _ROLLOUT_ANALYSIS, "experiment": _ANY_OBJ, "setCanaryScale": {
        "type": "object", "properties": {"weight": _I32, "replicas": _I32,
                                         "matchTrafficWeight": _B}},
    "setHeaderRoute": _ANY_OBJ, "setMirrorRoute": _ANY_OBJ}}
ROLLOUT_SCHEMA = {"type": "object", "required": ["spec"], "properties": {
    "spec": {"type": "object", "properties": {
        "replicas": _I32, "selector": _LABEL_SELECTOR, "template": _ANY_OBJ,
        "workloadRef": {"type": "object", "properties": {"apiVersion": _S, "kind": _S,
                                                         "name": _S}},
        "minReadySeconds": _I32, "revisionHistoryLimit": _I32, "paused": _B,
        "progressDeadlineSeconds": _I32, "progressDeadlineAbort": _B,
        "restartAt": {"type": "string", "format": "date-time"},
        "analysis": {"type": "object", "properties": {"successfulRunHistoryLimit": _I32,
                                                      "unsuccessfulRunHistoryLimit": _I32}},
        "strategy": {"type": "object", "properties": {
            "canary": {"type": "object", "properties": {
                "steps": {"type": "array", "items": _STEP},
                "analysis": {**_ROLLOUT_ANALYSIS, "properties": {
                    **_ROLLOUT_ANALYSIS["properties"], "startingStep": _I32}},
                "canaryService": _S, "stableService": _S, "maxSurge": _IOS,
                "maxUnavailable": _IOS, "canaryMetadata": _ANY_OBJ, "stableMetadata": _ANY_OBJ,
                "trafficRouting": _ANY_OBJ, "antiAffinity": _ANY_OBJ,
                "scaleDownDelaySeconds": _I32, "scaleDownDelayRevisionLimit": _I32,
                "abortScaleDownDelaySeconds": _I32, "dynamicStableScale": _B,
                "pingPong": _ANY_OBJ}},
            "blueGreen": {"type": "object", "required": ["activeService"], "properties": {
                "activeService": _S, "previewService": _S, "autoPromotionEnabled": _B,
                "autoPromotionSeconds": _I32, "previewReplicaCount": _I32,
                "scaleDownDelaySeconds": _I32, "prePromotionAnalysis": _ROLLOUT_ANALYSIS,
                "postPromotionAnalysis": _ROLLOUT_ANALYSIS, "maxUnavailable": _IOS,
                "antiAffinity": _ANY_OBJ, "activeMetadata": _ANY_OBJ,
                "previewMetadata": _ANY_OBJ, "abortScaleDownDelaySeconds": _I32,
                "scaleDownDelayRevisionLimit": _I32}}}}}}}}

# fluxcd/flagger charts/flagger/crds/crd.yaml, canaries.flagger.app v1beta1
# (apiextensions.k8s.io/v1, the Flagger 1.x CRD with stepWeights): spec requires targetRef,
# service, analysis; targetRef.kind is DaemonSet, Deployment or Service; autoscalerRef.kind is
# HorizontalPodAutoscaler or ScaledObject; service requires port (number); analysis is oneOf
# {interval, threshold, iterations} / {interval, threshold, stepWeight} / {interval, threshold,
# stepWeights}; intervals match ^[0-9]+(m|s); metrics require name; webhooks require name, url.
_FLAGGER_INTERVAL = {"type": "string", "pattern": r"^[0-9]+(m|s)"}
_REF = {"type": "object", "required": ["apiVersion", "kind", "name"]}
CANARY_SCHEMA = {"type": "object", "required": ["spec"], "properties": {
    "spec": {"type": "object", "required": ["targetRef", "service", "analysis"], "properties": {
        "provider": _S, "metricsServer": _S, "progressDeadlineSeconds": _NUM,
        "skipAnalysis": _B, "revertOnDeletion": _B, "suspend": _B,
        "targetRef": {**_REF, "properties": {
            "apiVersion": _S, "kind": {"type": "string",
                                       "enum": ["DaemonSet", "Deployment", "Service"]},
            "name": _S}},
        "autoscalerRef": {**_REF, "properties": {
            "apiVersion": _S, "kind": {"type": "string",
                                       "enum": ["HorizontalPodAutoscaler", "ScaledObject"]},
            "name": _S, "primaryScalerQueries": _STR_MAP}},
        "ingressRef": {**_REF, "properties": {"apiVersion": _S, "kind": {
            "type": "string", "enum": ["Ingress"]}, "name": _S}},
        "service": {"type": "object", "required": ["port"], "properties": {
            "name": _S, "port": _NUM, "portName": _S, "appProtocol": _S, "targetPort": _IOS,
            "portDiscovery": _B, "timeout": _S, "hosts": {"type": "array", "items": _S},
            "gateways": {"type": "array", "items": _S}, "match": {"type": "array", "items": _ANY_OBJ},
            "retries": _ANY_OBJ, "headers": _ANY_OBJ, "corsPolicy": _ANY_OBJ,
            "trafficPolicy": _ANY_OBJ, "apex": _ANY_OBJ, "primary": _ANY_OBJ,
            "canary": _ANY_OBJ, "meshName": _S, "backends": {"type": "array", "items": _S},
            "delegation": _B, "rewrite": _ANY_OBJ}},
        "analysis": {"type": "object", "oneOf": [
            {"required": ["interval", "threshold", "iterations"]},
            {"required": ["interval", "threshold", "stepWeight"]},
            {"required": ["interval", "threshold", "stepWeights"]}],
            "properties": {
                "interval": _FLAGGER_INTERVAL, "iterations": _NUM, "threshold": _NUM,
                "maxWeight": _NUM, "stepWeight": _NUM,
                "stepWeights": {"type": "array", "items": _NUM},
                "stepWeightPromotion": _NUM, "mirror": _B, "mirrorWeight": _NUM,
                "primaryReadyThreshold": _NUM, "canaryReadyThreshold": _NUM,
                "match": {"type": "array", "items": _ANY_OBJ},
                "metrics": {"type": "array", "items": {
                    "type": "object", "required": ["name"], "properties": {
                        "name": _S, "interval": _FLAGGER_INTERVAL, "threshold": _NUM,
                        "thresholdRange": {"type": "object", "properties": {"min": _NUM,
                                                                            "max": _NUM}},
                        "query": _S, "templateRef": {
                            "type": "object", "required": ["name"],
                            "properties": {"name": _S, "namespace": _S}}}}},
                "alerts": {"type": "array", "items": _ANY_OBJ},
                "webhooks": {"type": "array", "items": {
                    "type": "object", "required": ["name", "url"], "properties": {
                        "name": _S, "url": _S, "timeout": _FLAGGER_INTERVAL,
                        "muteAlert": _B, "metadata": _STR_MAP,
                        "type": {"type": "string", "enum": [
                            "", "confirm-rollout", "pre-rollout", "rollout",
                            "confirm-promotion", "post-rollout", "event", "rollback",
                            "confirm-traffic-increase"]}}}}}}}}}}

CRD_SCHEMAS = {("argoproj.io/v1alpha1", "AnalysisTemplate"): ANALYSIS_TEMPLATE_SCHEMA,
               ("argoproj.io/v1alpha1", "Rollout"): ROLLOUT_SCHEMA,
               ("flagger.app/v1beta1", "Canary"): CANARY_SCHEMA}
_CORE = {("autoscaling/v2", "HorizontalPodAutoscaler"), ("apps/v1", "Deployment"),
         ("v1", "Service"), ("v1", "ConfigMap")}


# ------------------------------------------------------------------------ the checker
def _type_ok(v: Any, t: str) -> bool:
    if t == "object":
        return isinstance(v, dict)
    if t == "array":
        return isinstance(v, list)
    if t == "string":
        return isinstance(v, str)
    if t == "boolean":
        return isinstance(v, bool)
    if t == "integer":  # a Python bool is an int, JSON's true is not
        return isinstance(v, int) and not isinstance(v, bool)
    if t == "number":
        return isinstance(v, (int, float)) and not isinstance(v, bool)
    raise AssertionError(t)


def _check(v: Any, s: Mapping, path: str, out: list) -> None:
    if s.get("x-kubernetes-int-or-string"):
        if not (_type_ok(v, "integer") or _type_ok(v, "string")):
            out.append(f"{path}: must be an integer or a string, got {type(v).__name__}")
        return
    t = s.get("type")
    if t is not None and not _type_ok(v, t):
        out.append(f"{path}: must be {t}, got {type(v).__name__} {v!r}")
        return
    if t == "integer" and s.get("format") == "int32" and not -2**31 <= v < 2**31:
        out.append(f"{path}: {v} does not fit int32")
    if "enum" in s and v not in s["enum"]:
        out.append(f"{path}: {v!r} is not one of {s['enum']}")
    if "pattern" in s and isinstance(v, str) and not re.search(s["pattern"], v):
        out.append(f"{path}: {v!r} does not match {s['pattern']}")
    if t == "array" and "items" in s:
        for i, item in enumerate(v):
            _check(item, s["items"], f"{path}[{i}]", out)
    if t != "object":
        return
    for r in s.get("required", ()):
        if r not in v:
            out.append(f"{path}.{r}: required")
    if "oneOf" in s:
        n = sum(all(k in v for k in alt["required"]) for alt in s["oneOf"])
        if n != 1:
            sets = " | ".join("{" + ", ".join(alt["required"]) + "}" for alt in s["oneOf"])
            out.append(f"{path}: must have exactly one of the field sets {sets} "
                       f"({'none' if n == 0 else n} present)")
    if s.get("x-kubernetes-preserve-unknown-fields"):
        return
    props = s.get("properties")
    for k, item in v.items():
        if props is not None and k in props:
            _check(item, props[k], f"{path}.{k}", out)
        elif "additionalProperties" in s:
            _check(item, s["additionalProperties"], f"{path}.{k}", out)
        elif props is not None:
            out.append(f"{path}.{k}: unknown field (the API server would prune it)")


_DNS1123_SUB = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
_LABEL_VALUE = re.compile(r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$")
_QNAME = re.compile(r"^([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]$")


def _key_ok(k: str) -> bool:
    prefix, _, name = k.rpartition("/")
    if prefix and (len(prefix) > 253 or not _DNS1123_SUB.match(prefix)):
        return False
    return 0 < len(name) <= 63 and bool(_QNAME.match(name))


def _metadata_errors(meta: Any) -> list:
    if not isinstance(meta, dict):
        return ["metadata: required object"]
    out = []
    name = meta.get("name")
    if not isinstance(name, str) or not name:
        out.append("metadata.name: required")
    elif len(name) > 253 or not _DNS1123_SUB.match(name):
        out.append(f"metadata.name: {name!r} is not a DNS-1123 subdomain")
    ns = meta.get("namespace")
    if ns is not None and (not isinstance(ns, str) or len(ns) > 63
                           or not re.match(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$", ns)):
        out.append(f"metadata.namespace: {ns!r} is not a DNS-1123 label")
    for field in ("labels", "annotations"):
        m = meta.get(field, {})
        if not isinstance(m, dict):
            out.append(f"metadata.{field}: must be a map")
            continue
        for k, v in m.items():
            if not isinstance(k, str) or not _key_ok(k):
                out.append(f"metadata.{field}: bad key {k!r}")
            if not isinstance(v, str):
                out.append(f"metadata.{field}.{k}: values are strings, got {type(v).__name__}")
            elif field == "labels" and (len(v) > 63 or not _LABEL_VALUE.match(v)):
                out.append(f"metadata.labels.{k}: {v!r} is not a valid label value")
    return out


def crd_errors(obj: Mapping) -> list:
    """Errors of an Argo Rollouts / Flagger object against the CRD facts above ([] if valid)."""
    key = (obj.get("apiVersion"), obj.get("kind"))
    if key not in CRD_SCHEMAS:
        raise ValueError(f"no CRD schema for {key}; known: {sorted(CRD_SCHEMAS)}")
    out = _metadata_errors(obj.get("metadata"))
    body = {k: v for k, v in obj.items() if k not in ("apiVersion", "kind", "metadata")}
    _check(body, CRD_SCHEMAS[key], "", out)
    return [e.lstrip(".") for e in out]


def core_errors(obj: Mapping, version: str = KUBERNETES_VERSION) -> list:
    """Errors of a core Kubernetes object against the official OpenAPI schema of ``version``
    (strict: unknown fields are errors), from the ``kubernetes-validate`` package."""
    try:
        import kubernetes_validate as kv
    except ImportError as e:  # pragma: no cover - depends on the environment
        raise ImportError("core-object validation needs the kubernetes-validate package "
                          "(pip install kubernetes-validate)") from e
    out = _metadata_errors(obj.get("metadata"))
    try:
        kv.validate(dict(obj), version, strict=True)
    except kv.ValidationError as e:
        out.append(f"{'.'.join(str(p) for p in e.path) or '(root)'}: {e.message}")
    except kv.SchemaNotFoundError as e:
        raise ValueError(e.message) from None
    return out


def _selector_errors(obj: Mapping) -> list:
    """The API server rejects a Deployment (and Argo a Rollout) whose selector does not select
    its own pod template's labels."""
    spec = obj.get("spec")
    if not isinstance(spec, dict) or "template" not in spec or "selector" not in spec:
        return []
    sel = (spec.get("selector") or {}).get("matchLabels") or {}
    tmpl = spec.get("template")
    labels = ((tmpl.get("metadata") or {}).get("labels") or {}) if isinstance(tmpl, dict) else {}
    if not isinstance(sel, dict) or not isinstance(labels, dict):
        return []
    bad = {k: v for k, v in sel.items() if labels.get(k) != v}
    return [f"spec.selector.matchLabels {bad} does not match spec.template.metadata.labels"] \
        if bad else []


def _pod_template_as_deployment(ro: Mapping) -> dict:
    spec = ro.get("spec", {})
    return {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": ro.get("metadata", {}),
            "spec": {k: spec[k] for k in ("replicas", "selector", "template", "minReadySeconds",
                                          "revisionHistoryLimit", "paused",
                                          "progressDeadlineSeconds") if k in spec}}


def validate(obj: Mapping, *, core: bool | None = None,
             version: str = KUBERNETES_VERSION) -> Mapping:
    """Raise :class:`SpecError` listing every problem of ``obj``; return ``obj`` when valid.

    Argo/Flagger kinds are checked against their CRD facts; a Rollout's pod template (and any
    core kind) against the official schema when ``kubernetes-validate`` is installed
    (``core=None``), always (``core=True``: missing package is an ImportError) or never
    (``core=False``)."""
    if not isinstance(obj, Mapping):
        raise TypeError(f"a Kubernetes object is a mapping, got {type(obj).__name__}")
    key = (obj.get("apiVersion"), obj.get("kind"))
    if core is None:
        try:
            import kubernetes_validate  # noqa: F401
            core = True
        except ImportError:
            core = False
    errs: list = []
    if key[1] in ("Rollout", "Deployment"):
        errs += _selector_errors(obj)
    if key in CRD_SCHEMAS:
        errs += crd_errors(obj)
        if core and key[1] == "Rollout" and "template" in obj.get("spec", {}):
            errs += [f"spec.template (as apps/v1 Deployment): {e}"
                     for e in core_errors(_pod_template_as_deployment(obj), version)
                     if not e.startswith("metadata")]
    elif key in _CORE or core:
        if not core:
            raise ValueError(f"{key} is a core object: install kubernetes-validate to check it")
        errs += core_errors(obj, version)
    else:
        raise ValueError(f"don't know how to validate {key}")
    if errs:
        raise SpecError(f"{key[1]} {obj.get('metadata', {}).get('name', '?')}", errs)
    return obj


# ------------------------------------------------------------------------ regional rollout
def regional_specs(name: str, image: str, order: Sequence[str], *,
                   failover: Mapping[str, Sequence[str]] | None = None,
                   endpoints: Mapping[str, str] | None = None, engine: str = "argo",
                   prometheus: str | Mapping[str, str] = "http://prometheus.monitoring:9090",
                   namespace: str = "default", steps: Sequence[float] = (5, 25, 50, 100),
                   max_error_ratio: float = 0.01, p99_seconds: float = 0.3,
                   interval: str = "1m", replicas: int = 2, port: int = 8080,
                   hpa: str | None = None) -> dict:
    """One set of objects per region (cluster) for a region-by-region rollout, in ``order``.

    Argo Rollouts and Flagger act inside one cluster; the order between regions is the
    deployer's: apply region i+1's objects once region i's rollout is healthy (as
    :class:`pyperfcore.ops.failover.RegionalRollout` does in-process). Each object is labelled
    with its region and annotated with its place in the order, the region before it, its
    failover regions and the failover endpoint (the first failover region's endpoint), so the
    failover path is written next to what it protects. ``prometheus`` may map region ->
    address (one Prometheus per cluster). Every object is validated before it is returned.

    Returns ``{region: [objects]}``: ``argo``: AnalysisTemplate and Rollout; ``flagger``:
    Canary (with ``autoscalerRef`` to ``hpa`` when given)."""
    from .release import argo_analysis_template, argo_rollout, flagger_canary

    order = list(order)
    if not order or len(set(order)) != len(order):
        raise ValueError(f"order must list distinct regions, got {order}")
    if engine not in ("argo", "flagger"):
        raise ValueError(f"engine is 'argo' or 'flagger', got {engine!r}")
    failover = dict(failover or {})
    endpoints = dict(endpoints or {})
    for r in order:
        if len(r) > 63 or not _LABEL_VALUE.match(r) or not r:
            raise ValueError(f"region {r!r} is not a valid label value")
        for f in failover.get(r, ()):
            if f == r:
                raise ValueError(f"region {r!r} cannot fail over to itself")
            if f not in endpoints:
                raise ValueError(f"failover region {f!r} of {r!r} has no endpoint")
    out = {}
    for i, r in enumerate(order):
        prom = prometheus[r] if isinstance(prometheus, Mapping) else prometheus
        fo = list(failover.get(r, ()))
        labels = {"app.kubernetes.io/name": name, "pyperfcore.io/region": r}
        notes = {"pyperfcore.io/rollout-order": f"{i + 1}/{len(order)}",
                 "pyperfcore.io/after-region": order[i - 1] if i else "",
                 "pyperfcore.io/failover-regions": ",".join(fo),
                 "pyperfcore.io/failover-endpoint": endpoints[fo[0]] if fo else ""}
        if r in endpoints:
            notes["pyperfcore.io/endpoint"] = endpoints[r]
        if engine == "argo":
            objs = [argo_analysis_template(f"{name}-analysis", name,
                                           max_error_ratio=max_error_ratio,
                                           p99_seconds=p99_seconds, interval=interval,
                                           prometheus=prom),
                    argo_rollout(name, image, steps=steps, analysis_template=f"{name}-analysis",
                                 replicas=replicas, port=port)]
        else:
            objs = [flagger_canary(name, namespace=namespace, port=port, steps=steps,
                                   interval=interval, max_duration_ms=p99_seconds * 1e3,
                                   min_success_pct=100.0 * (1.0 - max_error_ratio),
                                   autoscaler=hpa)]
            objs[0]["spec"]["metricsServer"] = prom
        for o in objs:
            o = copy.deepcopy(o)
            meta = o["metadata"]
            meta["namespace"] = namespace
            meta.setdefault("labels", {}).update(labels)
            meta.setdefault("annotations", {}).update(notes)
            validate(o)
            out.setdefault(r, []).append(o)
    return out
