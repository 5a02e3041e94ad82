#!/usr/bin/env python3
"""Checks the OpenTelemetry Collector configurations of chart renderings
without a collector binary (none is installable here): every pipeline names
receivers, processors and exporters that are defined, every defined component
is used, components are of the kinds the chart means to use, TLS is either
configured with certificate files mounted into the pod (the bundled Jaeger's
too) or `insecure`, never both, `${env:X}` references exist in the container, and metrics are not turned into Prometheus series by a collector
(the binaries' /metrics scrape is the only path: docs/operate.md#metrics-one-path).

    validate-otel-config.py RENDERED.yaml...
"""
import re
import sys

import yaml

KINDS = {
    "receivers": {"otlp", "filelog"},
    "processors": {"memory_limiter", "k8sattributes", "resource", "batch", "tail_sampling"},
    "exporters": {"otlp", "otlphttp", "loadbalancing", "kafka", "debug", "nop"},
    "extensions": {"health_check"},
}
# Exporters that would make a second path for the services' metrics into Prometheus.
METRIC_DUPLICATES = {"prometheus", "prometheusremotewrite"}


def tls_blocks(node, path=""):
    if isinstance(node, dict):
        for k, v in node.items():
            if k == "tls" and isinstance(v, dict):
                yield f"{path}.tls", v
            else:
                yield from tls_blocks(v, f"{path}.{k}")
    elif isinstance(node, list):
        for i, v in enumerate(node):
            yield from tls_blocks(v, f"{path}[{i}]")


def check(where, cfg, mounts, problems):
    defined = {kind: set((cfg.get(kind) or {}).keys()) for kind in KINDS}
    for kind, names in defined.items():
        for name in names:
            base = name.split("/", 1)[0]
            if base in METRIC_DUPLICATES:
                problems.append(f"{where}: {kind} {name}: metrics reach Prometheus by the scrape only")
            elif base not in KINDS[kind]:
                problems.append(f"{where}: {kind} {name} is not a component this chart expects")
    used = {kind: set() for kind in KINDS}
    service = cfg.get("service") or {}
    used["extensions"] |= set(service.get("extensions") or [])
    for pname, pipe in (service.get("pipelines") or {}).items():
        if not pipe.get("receivers") or not pipe.get("exporters"):
            problems.append(f"{where}: pipeline {pname} needs receivers and exporters")
        for kind in ("receivers", "processors", "exporters"):
            for name in pipe.get(kind) or []:
                used[kind].add(name)
                if name not in defined[kind]:
                    problems.append(f"{where}: pipeline {pname} uses undefined {kind[:-1]} {name}")
    for kind in KINDS:
        for name in sorted(defined[kind] - used[kind]):
            problems.append(f"{where}: {kind[:-1]} {name} is defined but in no pipeline")
    check_tls(where, cfg, mounts, problems)


def check_tls(where, cfg, mounts, problems):
    for path, tls in tls_blocks(cfg):
        files = [v for k, v in tls.items() if k.endswith("_file")]
        if tls.get("insecure") and files:
            problems.append(f"{where}: {path} is insecure and names certificate files")
        if not tls.get("insecure") and "cert_file" in tls and "key_file" not in tls:
            problems.append(f"{where}: {path} has cert_file without key_file")
        for f in files:
            if not any(f.startswith(m.rstrip("/") + "/") for m in mounts):
                problems.append(f"{where}: {path} reads {f}, which no volume of the pod mounts")


def main():
    problems, checked = [], 0
    for file in sys.argv[1:]:
        docs = [d for d in yaml.safe_load_all(open(file)) if d]
        configs = {d["metadata"]["name"]: d["data"] for d in docs if d["kind"] == "ConfigMap"}
        for d in docs:
            if d["kind"] not in ("Deployment", "DaemonSet"):
                continue
            for c in d["spec"]["template"]["spec"]["containers"]:
                volumes = {v["name"]: v for v in d["spec"]["template"]["spec"].get("volumes", [])}
                mounts = [m["mountPath"] for m in c.get("volumeMounts", [])]
                if "jaeger" in c["image"]:
                    # The bundled Jaeger (a collector build too): only its TLS files.
                    conf = next(m for m in c["volumeMounts"] if m["mountPath"] == "/conf")
                    cfg = yaml.safe_load(configs[volumes[conf["name"]]["configMap"]["name"]]["config.yaml"])
                    check_tls(f"{file}: {d['kind']} {d['metadata']['name']}", cfg, mounts, problems)
                    continue
                if "opentelemetry-collector" not in c["image"]:
                    continue
                volumes = {v["name"]: v for v in d["spec"]["template"]["spec"].get("volumes", [])}
                mounts = [m["mountPath"] for m in c.get("volumeMounts", [])]
                conf = next(m for m in c["volumeMounts"] if m["mountPath"] == "/conf")
                cfg = yaml.safe_load(configs[volumes[conf["name"]]["configMap"]["name"]]["config.yaml"])
                where = f"{file}: {d['kind']} {d['metadata']['name']}"
                check(where, cfg, mounts, problems)
                filelog = cfg.get("receivers", {}).get("filelog")
                if filelog and any(op.get("type") == "container" for op in filelog.get("operators", [])) \
                        and not filelog.get("include_file_path"):
                    problems.append(f"{where}: the container operator needs include_file_path (pod metadata)")
                if filelog:
                    log_mount = [m for m in c["volumeMounts"] if m["mountPath"] == "/var/log/pods"]
                    if not log_mount or not log_mount[0].get("readOnly"):
                        problems.append(f"{where}: filelog without a read-only /var/log/pods mount")
                envs = {e["name"] for e in c.get("env", [])}
                for ref in sorted(set(re.findall(r"\$\{env:(\w+)\}", yaml.safe_dump(cfg)))):
                    if ref not in envs:
                        problems.append(f"{where}: the config reads ${{env:{ref}}}, the container has no {ref}")
                checked += 1
    for p in problems:
        print(f"error: {p}", file=sys.stderr)
    if problems:
        sys.exit(1)
    print(f"{checked} collector configurations consistent")


if __name__ == "__main__":
    main()
