#!/usr/bin/env python3
"""Checks the OpenTelemetry Collector configurations of chart renderings
without a collector binary (none is installable here): every pipeline names
receivers, processors and exporters that are defined, every defined component
is used, components are of the kinds the chart means to use, TLS is either
configured with certificate files mounted into the pod (the bundled Jaeger's
too) or `insecure`, never both, `${env:X}` references exist in the container, and metrics are not turned into Prometheus series by a collector
(the binaries' /metrics scrape is the only path: docs/operate.md#metrics-one-path).

The binaries' environments (envFrom ConfigMaps included) are checked against
the collectors they send to:
* OTEL_METRICS_EXPORTER is set on every binary, `otlp` exactly when the
  chart's agent forwards pushed metrics to a gateway pipeline that keeps them
  (the Kafka archive), `none` when it would drop them or nothing receives them;
* one path per log line: every container of the release namespace's pods is
  either a binary exporting OTLP logs or read by the agent's filelog receiver
  (its include/exclude globs matched against the kubelet's log path of that
  container), never both and, while filelog is on, never neither.

    validate-otel-config.py [--namespace NS] RENDERED.yaml...
"""
import argparse
import re
import sys

import yaml

from chartpod import FIELD_VALUES, STAND_INS, container_env, load_rendering

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


BINARIES = ("backend-api", "resize-svc", "filter-svc", "ai-detect-svc")
# Pod names as the controllers make them (hash suffixes are 5-10 characters of
# [a-z0-9]); a glob written against the owner's name must match these.
POD_NAME = {"Deployment": "{}-7d9c5b8f6d-x2x9z", "StatefulSet": "{}-0", "DaemonSet": "{}-q8w2n", "Job": "{}-k4m7p",
            "CronJob": "{}-29012345-k4m7p"}


def glob_regex(pattern):
    """filelog's (doublestar) globs: * and ? stay within a path segment, ** crosses them."""
    out, i = "", 0
    while i < len(pattern):
        if pattern.startswith("**", i):
            out, i = out + ".*", i + 2
        elif pattern[i] == "*":
            out, i = out + "[^/]*", i + 1
        elif pattern[i] == "?":
            out, i = out + "[^/]", i + 1
        elif pattern[i] == "[":
            end = pattern.index("]", i)
            out, i = out + pattern[i:end + 1], end + 1
        elif pattern[i] == "{":
            end = pattern.index("}", i)
            out += "(?:" + "|".join(re.escape(a) for a in pattern[i + 1:end].split(",")) + ")"
            i = end + 1
        else:
            out, i = out + re.escape(pattern[i]), i + 1
    return re.compile(out + r"\Z")


def tailed(filelog, path):
    if not filelog:
        return False
    return any(glob_regex(g).match(path) for g in filelog.get("include") or []) \
        and not any(glob_regex(g).match(path) for g in filelog.get("exclude") or [])


def pod_spec(d):
    spec = d["spec"]
    if d["kind"] == "CronJob":
        return spec["jobTemplate"]["spec"]["template"]["spec"]
    return spec["template"]["spec"]


def check_app_telemetry(file, namespace, problems):
    """OTEL_METRICS_EXPORTER and the one path per log line (see the module doc)."""
    docs, configmaps, secrets = load_rendering(file)
    agent_cfg, gateway_cfg, agent_service = None, None, None
    for d in docs:
        if d["kind"] == "ConfigMap" and d["metadata"]["name"].endswith("-otel-agent"):
            agent_cfg = yaml.safe_load(d["data"]["config.yaml"])
        elif d["kind"] == "ConfigMap" and d["metadata"]["name"].endswith("-otel-gateway"):
            gateway_cfg = yaml.safe_load(d["data"]["config.yaml"])
        elif d["kind"] == "Service" and d["metadata"]["name"].endswith("-otel-agent"):
            agent_service = f"{d['metadata']['name']}.{d['metadata'].get('namespace', namespace)}.svc"
    filelog = (agent_cfg or {}).get("receivers", {}).get("filelog")
    if filelog and "filelog" not in agent_cfg["service"]["pipelines"].get("logs", {}).get("receivers", []):
        filelog = None

    def exporters(cfg, pipeline):
        return set((cfg or {}).get("service", {}).get("pipelines", {}).get(pipeline, {}).get("exporters", []))

    # Pushed metrics are kept when the agent forwards them and a gateway
    # pipeline ends somewhere other than nop/debug.
    agent_out = exporters(agent_cfg, "metrics")
    kept = bool(agent_out - {"nop", "debug"}) and bool(exporters(gateway_cfg, "metrics") - {"nop", "debug"})
    counts = {"otlp": 0, "filelog": 0, "metrics otlp": 0, "metrics none": 0}
    for d in docs:
        if d["kind"] not in ("Deployment", "StatefulSet", "DaemonSet", "Job", "CronJob"):
            continue
        ns = d["metadata"].get("namespace", namespace)
        spec = pod_spec(d)
        pod = POD_NAME[d["kind"]].format(d["metadata"]["name"])
        for c in spec.get("initContainers", []) + spec["containers"]:
            where = f"{file}: {d['kind']} {d['metadata']['name']} container {c['name']}"
            binary = c["image"].rsplit("/", 1)[-1].split(":", 1)[0] in BINARIES
            env = container_env(c, configmaps, secrets, FIELD_VALUES, STAND_INS) if binary else {}
            endpoint = env.get("OTEL_EXPORTER_OTLP_ENDPOINT", "")
            if binary:
                metrics = env.get("OTEL_METRICS_EXPORTER")
                host = endpoint.split("://", 1)[-1].rsplit(":", 1)[0]
                if not endpoint:
                    wanted, why = "none", "no OTLP endpoint"
                elif agent_service and host == agent_service:
                    wanted = "otlp" if kept else "none"
                    why = f"the chart's collector {'keeps' if kept else 'drops'} pushed metrics"
                else:
                    # A collector of the user's: either, as long as it is said.
                    wanted = metrics if metrics in ("otlp", "none") else "otlp or none"
                    why = f"endpoint {endpoint} is not the chart's agent"
                if metrics != wanted:
                    problems.append(f"{where}: OTEL_METRICS_EXPORTER={metrics!r}, expected {wanted!r} ({why})")
                else:
                    counts[f"metrics {metrics}"] += 1
            logs = env.get("OTEL_LOGS_EXPORTER", "otlp" if endpoint else "none")
            exporting = binary and bool(endpoint) and logs == "otlp"
            if binary and logs not in ("otlp", "none"):
                problems.append(f"{where}: OTEL_LOGS_EXPORTER={logs!r} is neither otlp nor none")
            if ns != namespace:
                continue
            read = tailed(filelog, f"/var/log/pods/{ns}_{pod}_0f8b6c1e-2d4a-4e7b-9c3f-5a1d2e3f4b5c/{c['name']}/0.log")
            if exporting and read:
                problems.append(f"{where}: exports its logs over OTLP and the agent's filelog reads them too (twice in Loki)")
            # Without filelog only the binaries have a way out to check: the
            # other containers' logs stay in `kubectl logs` by choice.
            elif not exporting and not read and (filelog or (binary and (endpoint or agent_cfg))):
                problems.append(f"{where}: its logs leave the pod by no path (no OTLP log export, not read by filelog)")
            elif exporting:
                counts["otlp"] += 1
            elif read:
                counts["filelog"] += 1
    return counts


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--namespace", default="image-processing", help="the release namespace of the renderings")
    ap.add_argument("files", nargs="+")
    args = ap.parse_args()
    problems, checked, paths = [], 0, []
    for file in args.files:
        counts = check_app_telemetry(file, args.namespace, problems)
        paths.append(f"{file.rsplit('/', 1)[-1]}: logs {counts['otlp']} otlp/{counts['filelog']} filelog, "
                     f"metrics push {counts['metrics otlp']} otlp/{counts['metrics none']} none")
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
    print(f"{checked} collector configurations consistent; one path per log line and metrics push as kept:")
    for p in paths:
        print(f"  {p}")


if __name__ == "__main__":
    main()
