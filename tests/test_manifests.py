"""deploy/'s manifests, validated offline against the schemas their owners publish:
Kubernetes' (kubernetes-validate) and KServe's CRDs (deploy/schemas/kserve-crds.json,
extracted from KServe's release), and the numbers that must agree."""

from __future__ import annotations

import copy
import importlib.util
import json
import re
from pathlib import Path
from types import ModuleType
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import yaml
from kubernetes_validate.utils import schema_contents
from referencing import Registry, Resource

from onnx_serving.server.metrics import read_monitoring_config

ROOT = Path(__file__).resolve().parent.parent
DEPLOY = ROOT / "deploy"
KUBERNETES = "1.33"
# KServe's own TF Serving runtime's args (config/runtimes/kserve-tensorflow-serving.yaml).
KSERVE_TF_ARGS = ["--model_name={{.Name}}", "--port=9000", "--rest_api_port=8080",
                  "--model_base_path=/mnt/models", "--rest_api_timeout_in_ms=60000"]
# After --shutdown_delay_seconds, the REST and gRPC servers each drain for up to 5 s.
DRAIN_S = 10
DEFAULT_GRACE_S = 30  # Kubernetes' terminationGracePeriodSeconds


def documents() -> list[tuple[str, dict[str, Any]]]:
    found = []
    for path in sorted(DEPLOY.rglob("*.yaml")):
        for document in yaml.safe_load_all(path.read_text()):
            if document:
                found.append((f"{path.relative_to(DEPLOY)}:{document['kind']}", document))
    return found


# KServe's protocol constants (pkg/constants/constants.go, v0.20.0): the CRD types
# protocolVersion(s) as plain strings, and KServe's controller matches these.
KSERVE_PROTOCOLS = {"v1", "v2", "grpc-v1", "grpc-v2"}


def _extractor() -> ModuleType:
    path = DEPLOY / "schemas" / "extract_kserve_crds.py"
    spec = importlib.util.spec_from_file_location("extract_kserve_crds", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


map_subschemas = _extractor().map_subschemas


def _strict(schema: dict[str, Any]) -> dict[str, Any]:
    """An OpenAPI v3 CRD schema as JSON Schema, with the API server's strict field
    validation (kubectl's default since Kubernetes 1.27): an object whose fields are listed
    refuses others, unless the CRD preserves unknown fields."""
    strict = map_subschemas(schema, _strict)
    if ("properties" in schema and "additionalProperties" not in schema
            and not schema.get("x-kubernetes-preserve-unknown-fields")):
        strict["additionalProperties"] = False
    return strict


def kserve_validators() -> dict[str, jsonschema.Draft202012Validator]:
    """A validator per apiVersion/kind of KServe's CRDs; metadata is Kubernetes'
    ObjectMeta, which the API server checks for every resource."""
    definitions = schema_contents(
        f"kubernetes-json-schema/v{KUBERNETES}.0-local-strict/_definitions.json", KUBERNETES)
    crds = json.loads((DEPLOY / "schemas" / "kserve-crds.json").read_text())
    registry: Registry = Registry().with_resource(
        definitions["$id"], Resource.from_contents(definitions))
    meta = {"$ref": f"{definitions['$id']}#/$defs/io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta"}
    return {
        kind: jsonschema.Draft202012Validator(
            {"$defs": {name: _strict(d) for name, d in crds["$defs"].items()}, "allOf": [
                _strict(schema), {"required": ["metadata", "spec"],
                                  "properties": {"metadata": meta}}]},
            registry=registry)
        for kind, schema in crds["schemas"].items()
    }


KSERVE = kserve_validators()


def validate(document: dict[str, Any]) -> None:
    if document["apiVersion"].startswith("serving.kserve.io/"):
        KSERVE[f"{document['apiVersion']}/{document['kind']}"].validate(document)
    else:
        kubernetes_validate.validate(document, KUBERNETES, strict=True)


DOCUMENTS = documents()


@pytest.mark.parametrize(("name", "document"), DOCUMENTS, ids=[n for n, _ in DOCUMENTS])
def test_manifest_is_valid(name: str, document: dict[str, Any]) -> None:
    validate(document)


def test_every_kind_is_there() -> None:
    kinds = sorted(document["kind"] for _, document in DOCUMENTS)
    assert kinds == ["ClusterServingRuntime", "ConfigMap", "Deployment",
                     "HorizontalPodAutoscaler", "InferenceService", "InferenceService",
                     "Service", "ServingRuntime"]


def runtime(kind: str = "ServingRuntime") -> dict[str, Any]:
    return next(d for _, d in DOCUMENTS if d["kind"] == kind)


def test_a_mistake_is_caught() -> None:
    for kind in ("ServingRuntime", "InferenceService"):
        wrong = copy.deepcopy(runtime(kind))
        if kind == "ServingRuntime":
            wrong["spec"]["containers"][0]["imagee"] = "typo"
        else:
            wrong["spec"]["predictor"]["model"]["storageURI"] = "pvc://models/typo"
        with pytest.raises(jsonschema.ValidationError):
            validate(wrong)
    deployment = copy.deepcopy(next(d for _, d in DOCUMENTS if d["kind"] == "Deployment"))
    deployment["spec"]["template"]["spec"]["terminationGracePeriodSeconds"] = "30s"
    with pytest.raises(jsonschema.ValidationError):
        validate(deployment)


def test_protocols_are_kserves() -> None:
    asked = {d["spec"]["predictor"]["model"]["protocolVersion"]
             for _, d in DOCUMENTS if d["kind"] == "InferenceService"}
    assert asked == {"grpc-v1", "v2"}  # TF Serving's protocol, and the Open Inference one
    for kind in ("ServingRuntime", "ClusterServingRuntime"):
        assert set(runtime(kind)["spec"]["protocolVersions"]) <= KSERVE_PROTOCOLS


def test_runtime_is_kserves_tf_serving_runtime_for_onnx() -> None:
    for kind in ("ServingRuntime", "ClusterServingRuntime"):
        spec = runtime(kind)["spec"]
        assert [f["name"] for f in spec["supportedModelFormats"]] == ["onnx"]
        assert set(spec["protocolVersions"]) == {"grpc-v1", "v1", "grpc-v2", "v2"}
        container = spec["containers"][0]
        assert container["args"][:len(KSERVE_TF_ARGS)] == KSERVE_TF_ARGS
        security = container["securityContext"]
        assert security["runAsUser"] == 1000 and security["runAsNonRoot"]
        assert security["capabilities"]["drop"] == ["ALL"]
        assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
        assert container["livenessProbe"]["httpGet"]["path"] == "/livez"
    assert runtime("ServingRuntime")["spec"] == runtime("ClusterServingRuntime")["spec"]


def flag(args: list[str], name: str) -> str | None:
    return next((a.split("=", 1)[1] for a in args if a.startswith(f"--{name}=")), None)


def test_prometheus_annotations_point_at_the_served_metrics() -> None:
    served = read_monitoring_config(ROOT / "docker" / "monitoring.config")
    spec = runtime()["spec"]
    args = spec["containers"][0]["args"]
    assert flag(args, "monitoring_config_file") == "/etc/onnx-serving/monitoring.config"
    assert spec["annotations"]["prometheus.kserve.io/path"] == served
    assert spec["annotations"]["prometheus.kserve.io/port"] == flag(args, "rest_api_port")
    deployment = next(d for _, d in DOCUMENTS if d["kind"] == "Deployment")
    annotations = deployment["spec"]["template"]["metadata"]["annotations"]
    assert annotations["prometheus.io/path"] == served
    assert annotations["prometheus.io/port"] == "8501"  # the image's REST port


def test_grace_period_covers_the_shutdown_delay_and_the_drain() -> None:
    """terminationGracePeriodSeconds must outlast --shutdown_delay_seconds plus the drain,
    or Kubernetes kills requests in flight."""
    pods: list[tuple[list[str], int]] = []
    for _, document in DOCUMENTS:
        if document["kind"] == "Deployment":
            pod = document["spec"]["template"]["spec"]
            pods += [(c["args"], pod.get("terminationGracePeriodSeconds", DEFAULT_GRACE_S))
                     for c in pod["containers"]]
        elif document["kind"] == "InferenceService":
            grace = document["spec"]["predictor"].get("terminationGracePeriodSeconds",
                                                      DEFAULT_GRACE_S)
            pods.append((runtime()["spec"]["containers"][0]["args"], grace))
        elif document["kind"].endswith("ServingRuntime"):
            pods.append((document["spec"]["containers"][0]["args"], DEFAULT_GRACE_S))
    assert len(pods) == 5
    for args, grace in pods:
        delay = int(flag(args, "shutdown_delay_seconds") or 0)
        assert delay > 0, args
        assert grace >= delay + DRAIN_S, (args, grace)


def test_hpa_scales_on_the_servers_gauges() -> None:
    hpa = next(d for _, d in DOCUMENTS if d["kind"] == "HorizontalPodAutoscaler")
    names = {m["pods"]["metric"]["name"] for m in hpa["spec"]["metrics"] if m["type"] == "Pods"}
    rules = yaml.safe_load(next(
        d for _, d in DOCUMENTS if d["kind"] == "ConfigMap")["data"]["config.yaml"])["rules"]
    exposed = {r["name"]["as"]: re.search(r'__name__="([^"]+)"', r["seriesQuery"]).group(1)
               for r in rules}
    assert names <= set(exposed)
    metrics_source = (ROOT / "server" / "metrics.py").read_text()
    for series in exposed.values():
        assert f'"{series}"' in metrics_source
