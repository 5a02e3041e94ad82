#!/usr/bin/env python3
"""Checks the monitoring stack's renderings (scripts/monitoring-stack.sh template)
against the imageflow chart rendered with k8s/monitoring/imageflow.values.yaml;
scripts/validate-deploy.sh runs it when the upstream chart archives are cached.

* every object of a built-in API valid against the Kubernetes 1.32 schemas
  (strict: unknown fields fail); the operator's CRs are left to the operator;
* traces and logs are kept 7 days on a PersistentVolume (Tempo block_retention,
  Loki retention_period with the compactor's retention on);
* the pieces meet: Alertmanager's configSecret is the Secret the imageflow
  chart renders, in the same namespace; Prometheus selects every rule and
  monitor (or the chart's selector labels); the imageflow gateway's trace
  exporter, its Loki exporter (Loki's /otlp endpoint) and Grafana's data
  sources point at Services that exist, on ports they serve; node_exporter
  runs in kube-system, not in `monitoring`.

    validate-monitoring-stack.py STACK_DIR IMAGEFLOW_RENDERING
"""
import pathlib
import sys

import kubernetes_validate
import yaml

stack_dir, imageflow_file = pathlib.Path(sys.argv[1]), sys.argv[2]
problems = []


def load(path):
    return [d for d in yaml.safe_load_all(open(path)) if d]


stack = {name: load(stack_dir / f"{name}.yaml") for name in ("kube-prometheus-stack", "loki", "tempo")}
imageflow = load(imageflow_file)
everything = [d for docs in stack.values() for d in docs]


def find(docs, kind, name=None):
    return [d for d in docs if d["kind"] == kind and (name is None or d["metadata"]["name"] == name)]


def one(docs, kind, name):
    found = find(docs, kind, name)
    if len(found) != 1:
        problems.append(f"expected one {kind} {name}, found {len(found)}")
        return {}
    return found[0]


# --- built-in APIs against the Kubernetes schemas ---------------------------------
checked = 0
for name, docs in stack.items():
    for d in docs:
        group = d["apiVersion"].split("/")[0] if "/" in d["apiVersion"] else ""
        if group.endswith("monitoring.coreos.com"):
            continue
        try:
            kubernetes_validate.validate(d, "1.32", strict=True)
            checked += 1
        except kubernetes_validate.ValidationError as e:
            problems.append(f"{name}: {d['kind']} {d['metadata']['name']}: {e.message}")
        except kubernetes_validate.SchemaNotFoundError:
            problems.append(f"{name}: no Kubernetes 1.32 schema for {d['apiVersion']} {d['kind']}")

# --- retention and durable storage -------------------------------------------------
tempo_sts = one(stack["tempo"], "StatefulSet", "tempo")
if not tempo_sts.get("spec", {}).get("volumeClaimTemplates"):
    problems.append("tempo: no volumeClaimTemplates: traces would not survive a restart")
tempo_cfg = yaml.safe_load(one(stack["tempo"], "ConfigMap", "tempo").get("data", {}).get("tempo.yaml", "{}"))
if tempo_cfg.get("compactor", {}).get("compaction", {}).get("block_retention") != "168h":
    problems.append("tempo: block_retention is not 168h (7 days)")
if tempo_cfg.get("storage", {}).get("trace", {}).get("backend") != "local":
    problems.append("tempo: trace storage is not the local (PVC) backend")
loki_sts = one(stack["loki"], "StatefulSet", "loki")
if not loki_sts.get("spec", {}).get("volumeClaimTemplates"):
    problems.append("loki: no volumeClaimTemplates: logs would not survive a restart")
loki_cfg = yaml.safe_load(one(stack["loki"], "ConfigMap", "loki").get("data", {}).get("config.yaml", "{}"))
if loki_cfg.get("limits_config", {}).get("retention_period") != "168h":
    problems.append("loki: retention_period is not 168h")
if loki_cfg.get("compactor", {}).get("retention_enabled") is not True:
    problems.append("loki: the compactor does not apply retention")

# --- the pieces meet ------------------------------------------------------------------
kps = stack["kube-prometheus-stack"]
am = find(kps, "Alertmanager")
am_secret = [d for d in imageflow if d["kind"] == "Secret" and "alertmanager.yaml" in d.get("stringData", {})]
if len(am) != 1 or len(am_secret) != 1:
    problems.append(f"expected one Alertmanager and one imageflow alertmanager Secret, found {len(am)}, {len(am_secret)}")
else:
    am, am_secret = am[0], am_secret[0]
    if am["spec"].get("configSecret") != am_secret["metadata"]["name"] \
            or am["metadata"]["namespace"] != am_secret["metadata"]["namespace"]:
        problems.append(f"Alertmanager reads Secret {am['metadata']['namespace']}/{am['spec'].get('configSecret')}, "
                        f"the chart renders {am_secret['metadata']['namespace']}/{am_secret['metadata']['name']}")
    if not am["spec"].get("storage"):
        problems.append("Alertmanager has no storage: silences would be lost on restart")

prom = find(kps, "Prometheus")
if len(prom) != 1:
    problems.append(f"expected one Prometheus, found {len(prom)}")
else:
    spec = prom[0]["spec"]
    if not spec.get("storage"):
        problems.append("Prometheus has no storage")
    for kind, selector in (("PrometheusRule", "ruleSelector"), ("ServiceMonitor", "serviceMonitorSelector")):
        wanted = (spec.get(selector) or {}).get("matchLabels", {})
        for obj in find(imageflow, kind):
            labels = obj["metadata"].get("labels", {})
            if any(labels.get(k) != v for k, v in wanted.items()):
                problems.append(f"Prometheus's {selector} {wanted} does not select {kind} {obj['metadata']['name']}")
    if not find(imageflow, "PrometheusRule") or not find(imageflow, "ServiceMonitor"):
        problems.append("the imageflow rendering with the stack's values has no PrometheusRule or ServiceMonitor")

services = {(d["metadata"].get("namespace", "monitoring"), d["metadata"]["name"]): {p["port"] for p in d["spec"]["ports"]}
            for d in everything if d["kind"] == "Service"}


def served(host_port, what):
    host, port = host_port.rsplit(":", 1)
    parts = host.split(".")
    key = (parts[1], parts[0])
    if int(port) not in services.get(key, set()):
        problems.append(f"{what} points at {host_port}: no such Service port in the stack")


gateway = [d for d in imageflow if d["kind"] == "ConfigMap" and "otel-gateway" in d["metadata"]["name"]]
exporters = [yaml.safe_load(v).get("exporters", {}) for d in gateway for v in d.get("data", {}).values()]
endpoints = [e.get("endpoint") for ex in exporters for n, e in ex.items() if n == "otlp/jaeger"]
if len(endpoints) != 1:
    problems.append(f"expected the gateway's otlp/jaeger exporter once, found {endpoints}")
else:
    served(endpoints[0], "the imageflow gateway's trace exporter")
loki_out = [e.get("endpoint", "") for ex in exporters for n, e in ex.items() if n == "otlphttp/loki"]
if len(loki_out) != 1:
    problems.append(f"expected the gateway's otlphttp/loki exporter once, found {loki_out}")
elif not loki_out[0].endswith("/otlp"):
    problems.append(f"the gateway's Loki exporter {loki_out[0]} is not Loki's OTLP endpoint (/otlp)")
else:
    served(loki_out[0].split("://", 1)[1].rsplit("/", 1)[0], "the imageflow gateway's log exporter")
if find(imageflow, "Deployment", "imageflow-jaeger"):
    problems.append("the in-memory Jaeger is still deployed next to Tempo")
grafana_ds = [yaml.safe_load(d["data"]["datasource.yaml"]) for d in find(kps, "ConfigMap", "kube-prometheus-stack-grafana-datasource")]
urls = {ds["name"]: ds["url"] for cfg in grafana_ds for ds in cfg.get("datasources", [])}
for name in ("Loki", "Tempo"):
    if name not in urls:
        problems.append(f"Grafana has no {name} data source")
    else:
        served(urls[name].split("://", 1)[1].rstrip("/"), f"Grafana's {name} data source")

for ds in find(kps, "DaemonSet"):
    if "node-exporter" in ds["metadata"]["name"] and ds["metadata"].get("namespace") == "monitoring":
        problems.append("node_exporter in `monitoring`: its host network, PID and file systems belong in kube-system"
                        " (`monitoring` grants host access to the collector agent's read-only log mount only)")

if problems:
    sys.exit("monitoring stack:\n  " + "\n  ".join(problems))
print(f"monitoring stack: {checked} built-in objects valid (Kubernetes 1.32, strict); Tempo and Loki keep 7 days on PVCs; "
      f"Alertmanager reads {am_secret['metadata']['name']}; traces to {endpoints[0]}; logs to {loki_out[0]}; Grafana: {urls['Loki']}, {urls['Tempo']}")
