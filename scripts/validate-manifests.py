"""Validates rendered Kubernetes manifests offline; exits 1 on any problem.

    validate-manifests.py [--kube-version 1.32] FILE...

* Every object against the Kubernetes JSON schemas of kubernetes-validate in
  strict mode (unknown fields fail). An API that has no schema (a typo'd
  apiVersion, a kind that does not exist in that version) fails too: the
  package's command line only warns about those, so its Python API is called.
* monitoring.coreos.com objects (PrometheusRule, ServiceMonitor, PodMonitor)
  against k8s/schemas/monitoring.coreos.com-v1.json (prometheus-operator's CRD
  schema, see the generator next to it).
* What the chart promises for its workloads: non-root, read-only root file
  system, no privilege escalation (root only with an imageflow.io/runs-as-root
  annotation giving the reason), seccomp RuntimeDefault, all capabilities
  dropped, CPU and memory requests and limits, probes on long-running containers.
* ConfigMap entries named *.json parse as JSON (dashboard, connector config).
* No two objects with the same kind, namespace and name in one file (one rendering).
* OpenTelemetry Collector configs (ConfigMaps labelled otel-agent/otel-gateway):
  every pipeline names receivers, processors and exporters that are defined,
  every defined component is used, memory_limiter comes first and batch last.
"""

import argparse
import json
import pathlib
import sys

import jsonschema
import kubernetes_validate
import yaml

ROOT = pathlib.Path(__file__).resolve().parent.parent
CRD_SCHEMAS = ROOT / "k8s" / "schemas" / "monitoring.coreos.com-v1.json"
WORKLOAD_KINDS = {"Deployment", "StatefulSet", "DaemonSet", "Job", "CronJob"}


def pod_spec(obj):
    spec = obj.get("spec", {})
    if obj["kind"] == "CronJob":
        spec = spec.get("jobTemplate", {}).get("spec", {})
    return spec.get("template", {}).get("spec", {})


def check_workload(obj, where):
    problems = []
    spec = pod_spec(obj)
    psc = spec.get("securityContext", {})
    long_running = obj["kind"] not in {"Job", "CronJob"}
    template = obj.get("spec", {}).get("template", {})
    root_reason = (template.get("metadata", {}).get("annotations") or {}).get("imageflow.io/runs-as-root")
    for c in spec.get("initContainers", []) + spec.get("containers", []):
        name = f"{where} container {c['name']}"
        sc = c.get("securityContext", {})
        # The container's setting, where it has one, overrides the pod's.
        non_root = sc["runAsNonRoot"] if "runAsNonRoot" in sc else psc.get("runAsNonRoot")
        if not root_reason and not non_root:
            problems.append(f"{name}: runAsNonRoot is not set")
        if sc.get("allowPrivilegeEscalation") is not False:
            problems.append(f"{name}: allowPrivilegeEscalation must be false")
        if sc.get("readOnlyRootFilesystem") is not True:
            problems.append(f"{name}: readOnlyRootFilesystem must be true")
        if "ALL" not in sc.get("capabilities", {}).get("drop", []):
            problems.append(f"{name}: capabilities must drop ALL")
        seccomp = sc.get("seccompProfile") or psc.get("seccompProfile") or {}
        if seccomp.get("type") != "RuntimeDefault":
            problems.append(f"{name}: seccompProfile must be RuntimeDefault")
        res = c.get("resources", {})
        for kind in ("requests", "limits"):
            for r in ("cpu", "memory"):
                if r not in res.get(kind, {}):
                    problems.append(f"{name}: resources.{kind}.{r} is missing")
        if long_running and c in spec.get("containers", []):
            for probe in ("readinessProbe", "livenessProbe"):
                if probe not in c:
                    problems.append(f"{name}: {probe} is missing")
        if ":" not in c.get("image", "") or c["image"].endswith(":latest"):
            problems.append(f"{name}: image {c.get('image')!r} must carry a pinned tag")
    return problems


def check_collector(obj, where):
    problems = []
    for key, text in (obj.get("data") or {}).items():
        if not key.endswith((".yaml", ".yml")):
            continue
        cfg = yaml.safe_load(text)
        service = cfg.get("service", {})
        pipelines = service.get("pipelines", {})
        if not pipelines:
            problems.append(f"{where} {key}: no pipelines")
        used = {"receivers": set(), "processors": set(), "exporters": set()}
        for pname, p in pipelines.items():
            for section in used:
                for comp in p.get(section, []):
                    used[section].add(comp)
                    if comp not in (cfg.get(section) or {}):
                        problems.append(f"{where} {key}: pipeline {pname} uses undefined {section[:-1]} {comp}")
            procs = p.get("processors", [])
            if procs and procs[0] != "memory_limiter":
                problems.append(f"{where} {key}: pipeline {pname}: memory_limiter must be the first processor")
            if procs and procs[-1] != "batch":
                problems.append(f"{where} {key}: pipeline {pname}: batch must be the last processor")
        for section, names in used.items():
            for comp in cfg.get(section) or {}:
                if comp not in names:
                    problems.append(f"{where} {key}: {section[:-1]} {comp} is defined but in no pipeline")
        for ext in service.get("extensions", []):
            if ext not in (cfg.get("extensions") or {}):
                problems.append(f"{where} {key}: undefined extension {ext}")
    return problems


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--kube-version", default="1.32")
    ap.add_argument("files", nargs="+")
    args = ap.parse_args()
    crd = json.loads(CRD_SCHEMAS.read_text())["kinds"]
    problems, count = [], 0
    for file in args.files:
        seen = {}  # each file is one rendering
        with open(file) as f:
            docs = [d for d in yaml.safe_load_all(f) if d]
        for obj in docs:
            count += 1
            kind, meta = obj.get("kind"), obj.get("metadata", {})
            where = f"{file}: {kind}/{meta.get('name')}"
            key = (kind, meta.get("namespace", ""), meta.get("name"))
            if key in seen:
                problems.append(f"{where}: defined twice (also in {seen[key]})")
            seen[key] = file
            api = obj.get("apiVersion", "")
            if api.startswith("monitoring.coreos.com/"):
                schema = crd.get(kind) if api == "monitoring.coreos.com/v1" else None
                if schema is None:
                    problems.append(f"{where}: no CRD schema for {api} {kind}")
                    continue
                for err in jsonschema.Draft202012Validator(schema).iter_errors(obj):
                    path = ".".join(str(p) for p in err.absolute_path)
                    problems.append(f"{where}: {path}: {err.message}")
            else:
                try:
                    kubernetes_validate.validate(obj, args.kube_version, strict=True)
                except kubernetes_validate.ValidationError as err:
                    path = ".".join(str(p) for p in err.path)
                    problems.append(f"{where}: {path}: {err.message}")
                except kubernetes_validate.SchemaNotFoundError as err:
                    problems.append(f"{where}: unknown API: {err.message}")
            if kind in WORKLOAD_KINDS:
                problems.extend(check_workload(obj, where))
            if kind == "ConfigMap":
                for k, text in (obj.get("data") or {}).items():
                    if k.endswith(".json"):
                        try:
                            json.loads(text)
                        except ValueError as err:
                            problems.append(f"{where}: {k} is not valid JSON: {err}")
            labels = meta.get("labels") or {}
            if kind == "ConfigMap" and labels.get("app.kubernetes.io/component") in {"otel-agent", "otel-gateway"}:
                problems.extend(check_collector(obj, where))
    for p in problems:
        print(f"error: {p}", file=sys.stderr)
    if problems:
        sys.exit(1)
    print(f"{count} objects valid against Kubernetes {args.kube_version} (strict) and the CRD schemas: {', '.join(args.files)}")


if __name__ == "__main__":
    main()
