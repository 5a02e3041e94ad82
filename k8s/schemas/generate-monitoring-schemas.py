"""Regenerates monitoring.coreos.com-v1.json, the JSON Schemas that
scripts/validate-manifests.py checks PrometheusRule and ServiceMonitor objects
against.

Source: the PyPI package cloudcoil-models-prometheus-operator==0.80.1.0, whose
pydantic models are generated from the openAPIV3Schema of prometheus-operator
v0.80.1's CRDs (field names, types, enums and required fields as in the CRDs).
Objects that declare properties get `additionalProperties: false`, so an unknown
or misspelt field fails, as `kubectl apply --validate=strict` would fail it, and
Go's `^(?i)` patterns are written `(?i)^` for Python's re.

    python3 -m venv /tmp/crd && /tmp/crd/bin/pip install cloudcoil-models-prometheus-operator==0.80.1.0
    /tmp/crd/bin/python k8s/schemas/generate-monitoring-schemas.py > k8s/schemas/monitoring.coreos.com-v1.json
"""

import json
import sys

from cloudcoil.models.prometheus_operator import v1


def strict(node):
    if isinstance(node, dict):
        # Go's regexp allows `^(?i)...`; Python wants the inline flag first.
        if isinstance(node.get("pattern"), str) and node["pattern"].startswith("^(?i)"):
            node["pattern"] = "(?i)^" + node["pattern"][len("^(?i)"):]
        if node.get("type") == "object" and "properties" in node and "additionalProperties" not in node:
            node["additionalProperties"] = False
        for value in node.values():
            strict(value)
    elif isinstance(node, list):
        for value in node:
            strict(value)
    return node


def main():
    out = {
        "source": "cloudcoil-models-prometheus-operator==0.80.1.0 (prometheus-operator v0.80.1 CRDs)",
        "kinds": {
            kind: strict(getattr(v1, kind).model_json_schema(by_alias=True))
            for kind in ("PrometheusRule", "ServiceMonitor", "PodMonitor")
        },
    }
    json.dump(out, sys.stdout, indent=1, sort_keys=True)
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()
