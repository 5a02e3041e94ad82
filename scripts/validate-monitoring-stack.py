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
  sources point at Services that exist, on ports they serve; Grafana links
  a log's trace_id field to Tempo; node_exporter
  runs in kube-system, not in `monitoring`;
* the PostgreSQL and Kafka exporters: each ServiceMonitor selects its
  exporter's Service and port and is selected by Prometheus; the series are
  labelled with the release's namespace (Alertmanager inhibits by it);
  postgres_exporter reads DATA_SOURCE_NAME from a Secret the imageflow chart
  renders in `monitoring`, whose server is the release's PostgreSQL Service;
  kafka_exporter's brokers are the release's Kafka Service; the metrics the
  dependency alerts read are among those the pinned exporter versions emit.

    validate-monitoring-stack.py STACK_DIR IMAGEFLOW_RENDERING
"""
import base64
import pathlib
import re
import sys

import kubernetes_validate
import yaml

stack_dir, imageflow_file = pathlib.Path(sys.argv[1]), sys.argv[2]
problems = []


def load(path):
    return [d for d in yaml.safe_load_all(open(path)) if d]


STACK = ("kube-prometheus-stack", "loki", "tempo", "postgres-exporter", "kafka-exporter")
# The namespace scripts/deploy.sh installs the imageflow release into.
RELEASE_NAMESPACE = "image-processing"
# What the dependency alerts may read, per exporter: the metric names of the
# pinned versions (postgres_exporter v0.20.1: exporter/postgres_exporter.go,
# collector/pg_stat_activity.go, collector/pg_setting.go; kafka_exporter
# v1.9.0: kafka_exporter.go), for the prefixes each owns.
EXPORTED = {
    "postgres-exporter": ("pg_", {"pg_up", "pg_stat_activity_count", "pg_stat_activity_max_tx_duration",
                                  "pg_settings_max_connections", "pg_settings_superuser_reserved_connections",
                                  "pg_database_size_bytes", "pg_database_connection_limit"}),
    "kafka-exporter": ("kafka_", {"kafka_brokers", "kafka_consumergroup_lag", "kafka_consumergroup_lag_sum",
                                  "kafka_consumergroup_current_offset", "kafka_consumergroup_current_offset_sum",
                                  "kafka_consumergroup_members", "kafka_topic_partitions",
                                  "kafka_topic_partition_current_offset", "kafka_topic_partition_oldest_offset"}),
}
stack = {name: load(stack_dir / f"{name}.yaml") for name in STACK}
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
sources = {ds["name"]: ds for cfg in grafana_ds for ds in cfg.get("datasources", [])}
# Records reach Loki over OTLP: trace_id is structured metadata, not text in the
# line, so a regex over the line would never link a log to its trace.
links = [f for f in sources.get("Loki", {}).get("jsonData", {}).get("derivedFields", [])
         if f.get("matcherType") == "label" and f.get("matcherRegex") == "trace_id"
         and f.get("datasourceUid") == sources.get("Tempo", {}).get("uid")]
if not links:
    problems.append("Grafana's Loki data source does not link the trace_id field to Tempo (derivedFields, matcherType label)")
for name in ("Loki", "Tempo"):
    if name not in urls:
        problems.append(f"Grafana has no {name} data source")
    else:
        served(urls[name].split("://", 1)[1].rstrip("/"), f"Grafana's {name} data source")

# --- the exporters the dependency alerts need --------------------------------------
def ns_of(d, default="monitoring"):
    return d["metadata"].get("namespace", default)


def env_secret(container, var):
    for e in container.get("env") or []:
        if e["name"] == var:
            ref = (e.get("valueFrom") or {}).get("secretKeyRef")
            return (ref["name"], ref["key"]) if ref else None
    return None


def imageflow_service(host_port, what):
    """host:port (name.namespace.svc[.cluster.local]) is a Service port of the imageflow rendering."""
    host, port = host_port.rsplit(":", 1)
    parts = host.split(".")
    if len(parts) < 3 or parts[2] != "svc":
        problems.append(f"{what}: {host_port} is not a <service>.<namespace>.svc address")
        return
    svc = [d for d in imageflow if d["kind"] == "Service" and d["metadata"]["name"] == parts[0]]
    if parts[1] != RELEASE_NAMESPACE or not svc or int(port) not in {p["port"] for p in svc[0]["spec"]["ports"]}:
        problems.append(f"{what}: {host_port} is no Service port of the imageflow release in {RELEASE_NAMESPACE}")


rules_used = set()
for rule_obj in find(imageflow, "PrometheusRule"):
    for group in rule_obj["spec"]["groups"]:
        for rule in group["rules"]:
            rules_used |= set(re.findall(r"\b[a-zA-Z_:][a-zA-Z0-9_:]*\b", rule["expr"]))
prom_spec = prom[0]["spec"] if len(prom) == 1 else {}
exporter_jobs = []
for name, (prefix, emitted) in EXPORTED.items():
    docs = stack[name]
    monitors, services = find(docs, "ServiceMonitor"), find(docs, "Service")
    if len(monitors) != 1 or len(services) != 1:
        problems.append(f"{name}: expected one ServiceMonitor and one Service, found {len(monitors)}, {len(services)}")
        continue
    sm, svc = monitors[0], services[0]
    if any(svc["metadata"].get("labels", {}).get(k) != v for k, v in sm["spec"]["selector"]["matchLabels"].items()):
        problems.append(f"{name}: the ServiceMonitor's selector does not match Service {svc['metadata']['name']}")
    if ns_of(svc) not in sm["spec"].get("namespaceSelector", {}).get("matchNames", [ns_of(sm)]):
        problems.append(f"{name}: the ServiceMonitor does not look in the Service's namespace {ns_of(svc)}")
    ports = {p.get("name") for p in svc["spec"]["ports"]}
    for ep in sm["spec"]["endpoints"]:
        if ep.get("port") not in ports:
            problems.append(f"{name}: ServiceMonitor endpoint port {ep.get('port')} is not a port of the Service")
        relabeled = [r for r in ep.get("relabelings") or [] if r.get("targetLabel") == "namespace"]
        if not relabeled or relabeled[-1].get("replacement") != RELEASE_NAMESPACE:
            problems.append(f"{name}: its series are not labelled namespace={RELEASE_NAMESPACE} (Alertmanager's"
                            " inhibition and the alerts' grouping match on the release's namespace)")
    wanted = (prom_spec.get("serviceMonitorSelector") or {}).get("matchLabels", {})
    if any(sm["metadata"].get("labels", {}).get(k) != v for k, v in wanted.items()):
        problems.append(f"{name}: Prometheus's serviceMonitorSelector {wanted} does not select its ServiceMonitor")
    deployments = find(docs, "Deployment")
    container = deployments[0]["spec"]["template"]["spec"]["containers"][0] if len(deployments) == 1 else {}
    if name == "postgres-exporter":
        ref = env_secret(container, "DATA_SOURCE_NAME")
        secret = [d for d in imageflow if d["kind"] == "Secret" and ref and d["metadata"]["name"] == ref[0]
                  and ns_of(d, RELEASE_NAMESPACE) == ns_of(deployments[0])]
        if not ref or not secret:
            problems.append(f"{name}: DATA_SOURCE_NAME does not come from a Secret the imageflow chart renders in"
                            f" {ns_of(deployments[0]) if deployments else '?'} ({ref})")
        else:
            data = secret[0].get("data", {})
            if ref[1] not in data:
                problems.append(f"{name}: Secret {ref[0]} has no key {ref[1]}")
            else:
                dsn = base64.b64decode(data[ref[1]]).decode()
                imageflow_service(dsn.split("@", 1)[-1].split("/", 1)[0], f"{name}'s DATA_SOURCE_NAME")
    else:
        servers = [a.split("=", 1)[1] for a in container.get("args", []) if a.startswith("--kafka.server=")]
        if not servers:
            problems.append(f"{name}: no --kafka.server")
        for server in servers:
            imageflow_service(server, f"{name} --kafka.server")
    used = {m for m in rules_used if m.startswith(prefix)}
    if not used:
        problems.append(f"{name}: no alert rule reads a {prefix}* metric")
    for m in sorted(used - emitted):
        problems.append(f"the alert rules read {m}, which {name} does not emit")
    exporter_jobs.append(f"{svc['metadata']['name']} ({', '.join(sorted(used))})")

for ds in find(kps, "DaemonSet"):
    if "node-exporter" in ds["metadata"]["name"] and ds["metadata"].get("namespace") == "monitoring":
        problems.append("node_exporter in `monitoring`: its host network, PID and file systems belong in kube-system"
                        " (`monitoring` grants host access to the collector agent's read-only log mount only)")

if problems:
    sys.exit("monitoring stack:\n  " + "\n  ".join(problems))
print(f"monitoring stack: {checked} built-in objects valid (Kubernetes 1.32, strict); Tempo and Loki keep 7 days on PVCs; "
      f"Alertmanager reads {am_secret['metadata']['name']}; traces to {endpoints[0]}; logs to {loki_out[0]}; Grafana: {urls['Loki']}, {urls['Tempo']}; "
      f"exporters scraped: {'; '.join(exporter_jobs)}")
