"""Writes kserve-crds.json: the openAPIV3Schema of KServe's published CRDs for the kinds
deploy/kserve uses, as KServe ships them, so tests/test_manifests.py validates offline
against KServe's own schema.

    python deploy/schemas/extract_kserve_crds.py KSERVE_CHECKOUT v0.20.0

reads config/crd/full/serving.kserve.io_*.yaml at that tag. Only ``description`` texts
are dropped; a subtree that occurs more than once (a Container in every predictor, say) is
stored once under ``$defs`` and referenced, so the file stays small and the schema the same.
"""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml

CRDS = ("servingruntimes", "clusterservingruntimes", "inferenceservices")
OUT = Path(__file__).with_name("kserve-crds.json")
SHARED_MIN_CHARS = 400  # smaller repeats are cheaper inline than as a reference


def map_subschemas(schema: dict[str, Any], f: Callable[[dict[str, Any]], Any]) -> dict[str, Any]:
    """``schema`` with ``f`` applied to what it holds in schema position; the rest (enum,
    default, the ``properties`` map itself) is data, left as it is. tests/test_manifests.py
    walks the schemas with it too."""
    mapped = dict(schema)
    for key, value in schema.items():
        if key in ("items", "additionalProperties", "not") and isinstance(value, dict):
            mapped[key] = f(value)
        elif key in ("anyOf", "allOf", "oneOf"):
            mapped[key] = [f(v) for v in value]
        elif key in ("properties", "patternProperties"):
            mapped[key] = {name: f(v) for name, v in value.items()}
    return mapped


def _strip(schema: dict[str, Any]) -> dict[str, Any]:
    """``schema`` without its ``description`` texts."""
    return map_subschemas({k: v for k, v in schema.items() if k != "description"}, _strip)


def _key(schema: dict[str, Any]) -> str:
    return json.dumps(schema, sort_keys=True, separators=(",", ":"))


def _count(schema: dict[str, Any], counts: Counter[str]) -> dict[str, Any]:
    counts[_key(schema)] += 1
    return map_subschemas(schema, lambda sub: _count(sub, counts))


def _share(schema: dict[str, Any], counts: Counter[str], defs: dict[str, Any],
           top: bool = False) -> dict[str, Any]:
    """``schema`` with every repeated large subschema replaced by a ``$ref`` into ``defs``."""
    shared = map_subschemas(schema, lambda sub: _share(sub, counts, defs))
    key = _key(schema)
    if top or counts[key] < 2 or len(key) < SHARED_MIN_CHARS:
        return shared
    name = hashlib.sha256(key.encode()).hexdigest()[:12]
    defs[name] = shared
    return {"$ref": f"#/$defs/{name}"}


def main(checkout: Path, tag: str) -> None:
    commit = subprocess.run(["git", "-C", str(checkout), "rev-parse", f"{tag}^{{commit}}"],
                            capture_output=True, text=True, check=True).stdout.strip()
    schemas: dict[str, Any] = {}
    for crd_name in CRDS:
        path = f"config/crd/full/serving.kserve.io_{crd_name}.yaml"
        text = subprocess.run(["git", "-C", str(checkout), "show", f"{commit}:{path}"],
                              capture_output=True, text=True, check=True).stdout
        crd = yaml.safe_load(text)
        group, kind = crd["spec"]["group"], crd["spec"]["names"]["kind"]
        for version in crd["spec"]["versions"]:
            schemas[f"{group}/{version['name']}/{kind}"] = _strip(
                version["schema"]["openAPIV3Schema"])
    counts: Counter[str] = Counter()
    for schema in schemas.values():
        _count(schema, counts)
    defs: dict[str, Any] = {}
    shared = {name: _share(schema, counts, defs, top=True) for name, schema in schemas.items()}
    document = {
        "source": f"https://github.com/kserve/kserve/tree/{tag}/config/crd/full "
                  f"(serving.kserve.io_{{{','.join(CRDS)}}}.yaml)",
        "version": tag,
        "commit": commit,
        "note": "openAPIV3Schema per apiVersion/kind as published; descriptions dropped, "
                "repeated subtrees moved to $defs (deploy/schemas/extract_kserve_crds.py)",
        "schemas": shared,
        "$defs": dict(sorted(defs.items())),
    }
    OUT.write_text(json.dumps(document, indent=None, separators=(",", ":"), sort_keys=True)
                   + "\n")


if __name__ == "__main__":
    main(Path(sys.argv[1]), sys.argv[2])
