#!/usr/bin/env python3
"""Metrics reach Prometheus by one path (docs/operate.md#metrics-one-path),
shown with a real Prometheus (Debian's, unpacked by scripts/deploy-tools.sh).

    validate-metrics-path.py [--require] PROMETHEUS BIN_DIR MODELS_DIR RENDERED.yaml

From one `helm template` rendering:

1. the scrape configuration the chart implies: every ServiceMonitor endpoint
   (port, path) of every Service it selects, `job` from the Service's jobLabel
   label, the pods behind it (a Deployment whose pod labels match the Service's
   selector) and the container port the Service port targets;
2. no collector offers the services' metrics again: the collector Services'
   scraped ports carry the collectors' own telemetry only (:8888), and no
   collector configuration has a Prometheus exporter;
3. the binaries (BIN_DIR) start with their pods' environment (scripts/chartpod.py),
   listen addresses moved to loopback ports, an SQLite file for backend-api's
   database (PostgreSQL is not here); Prometheus scrapes them every
   second with the derived jobs and paths;
4. every target is up, every series Prometheus holds for the services has
   exactly one job among the ServiceMonitor's, and each job holds exactly the
   samples its scrape returned (scrape_samples_scraped): no series arrives twice,
   and the same metric of one service never appears under a second job.

Collector targets (:8888) are not started (no collector binary here); their
ServiceMonitor endpoints are checked statically (2.). Without --require, a
binary missing from BIN_DIR is skipped with a note; with none built the check
says so and passes.
"""
import argparse
import json
import os
import pathlib
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.parse
import urllib.request

import yaml

from chartpod import FIELD_VALUES, STAND_INS, container_env, free_port, load_rendering, stop_processes

BINARIES = ("backend-api", "resize-svc", "filter-svc", "ai-detect-svc")
LISTEN = ("GRPC_LISTEN_ADDR", "HTTP_LISTEN_ADDR", "METRICS_LISTEN_ADDR", "GRPC_HEALTH_LISTEN_ADDR")
# Nothing answers there: backend-api gets an SQLite file instead (it serves
# nothing until its database answers).
STAND_INS = dict(STAND_INS, DATABASE_URL="postgres://imageflow@127.0.0.1:1/imageflow")


def matches(selector, labels):
    return all(labels.get(k) == v for k, v in (selector or {}).items())


def selects(sm, svc):
    sel = sm["spec"]["selector"]
    labels = svc["metadata"].get("labels", {})
    if not matches(sel.get("matchLabels"), labels):
        return False
    for e in sel.get("matchExpressions", []):
        if e["operator"] == "Exists" and e["key"] not in labels:
            return False
        if e["operator"] == "In" and labels.get(e["key"]) not in e["values"]:
            return False
    return True


def query(port, q):
    url = f"http://127.0.0.1:{port}/api/v1/query?" + urllib.parse.urlencode({"query": q})
    with urllib.request.urlopen(url, timeout=5) as r:
        return json.load(r)["data"]["result"]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--require", action="store_true")
    ap.add_argument("prometheus")
    ap.add_argument("bin_dir", type=pathlib.Path)
    ap.add_argument("models_dir", type=pathlib.Path)
    ap.add_argument("rendering")
    args = ap.parse_args()
    docs, configmaps, secrets = load_rendering(args.rendering)
    problems, notes = [], []
    monitors = [d for d in docs if d["kind"] == "ServiceMonitor"]
    if not monitors:
        sys.exit(f"{args.rendering} has no ServiceMonitor")
    services = [d for d in docs if d["kind"] == "Service"]
    deployments = [d for d in docs if d["kind"] == "Deployment"]

    # 2. The collectors' Services and configurations.
    for d in docs:
        if d["kind"] == "ConfigMap" and "otel" in d["metadata"]["name"]:
            cfg = yaml.safe_load(d["data"]["config.yaml"])
            for name in cfg.get("exporters", {}):
                if name.split("/")[0] in ("prometheus", "prometheusremotewrite"):
                    problems.append(f"{d['metadata']['name']}: exporter {name} is a second path into Prometheus")

    # 1. + 3. Targets the ServiceMonitors imply, and the binaries behind them.
    jobs, runs, work = {}, [], pathlib.Path(tempfile.mkdtemp(prefix="metrics-path-"))
    started = {}

    def start(binary, path, c, job):
        """Starts one pod's binary; returns {container port: loopback port}."""
        env = container_env(c, configmaps, secrets, FIELD_VALUES, STAND_INS)
        moved = {}
        for key in LISTEN:
            if key in env:
                port = free_port()
                moved[int(env[key].rsplit(":", 1)[1])] = port
                env[key] = f"127.0.0.1:{port}"
        if binary == "ai-detect-svc":
            ort = args.models_dir / "lib" / "libonnxruntime.so"
            if not ort.exists():
                (problems if args.require else notes).append(f"no ONNX Runtime in {args.models_dir}; {job} not scraped")
                return None
            env["MODEL_DIR"] = str(args.models_dir.resolve())
            env["ORT_DYLIB_PATH"] = str(ort.resolve())
        if "DATABASE_URL" in env:
            # backend-api serves nothing until its database answers, and the
            # chart's PostgreSQL is not here: an SQLite file stands in (the
            # database is a peer, not part of the metrics path).
            env["DATABASE_URL"] = f"sqlite://{work}/{len(runs)}.db"
        env["PATH"] = os.environ.get("PATH", "/usr/bin:/bin")
        log = open(work / f"{job}.log", "w")
        runs.append((job, subprocess.Popen([str(path)], env=env, stdout=log, stderr=subprocess.STDOUT, cwd=work)))
        return moved

    for sm in monitors:
        ns = sm["spec"].get("namespaceSelector", {}).get("matchNames")
        for svc in services:
            svc_ns = svc["metadata"].get("namespace", "image-processing")
            if (ns and svc_ns not in ns) or not selects(sm, svc):
                continue
            job = svc["metadata"]["labels"].get(sm["spec"].get("jobLabel", ""), svc["metadata"]["name"])
            ports = {p["name"]: p for p in svc["spec"]["ports"]}
            for ep in sm["spec"]["endpoints"]:
                if ep["port"] not in ports:
                    continue
                if job == "otel-collector":
                    if ports[ep["port"]]["port"] != 8888:
                        problems.append(f"{svc['metadata']['name']}: scraped port {ep['port']} is not the collector's own telemetry")
                    continue
                target_port = ports[ep["port"]]["targetPort"]
                for dep in deployments:
                    pod = dep["spec"]["template"]
                    if dep["metadata"].get("namespace", "image-processing") != svc_ns \
                            or not matches(svc["spec"]["selector"], pod["metadata"]["labels"]):
                        continue
                    for c in pod["spec"]["containers"]:
                        cport = next((p["containerPort"] for p in c.get("ports", [])
                                      if target_port in (p.get("name"), p["containerPort"])), None)
                        binary = c["image"].rsplit("/", 1)[-1].split(":", 1)[0]
                        if cport is None or binary not in BINARIES:
                            continue
                        path = args.bin_dir / binary
                        if not path.exists():
                            (problems if args.require else notes).append(f"{path} is not built; {job} not scraped")
                            continue
                        key = (dep["metadata"]["name"], c["name"])
                        if key not in started:
                            started[key] = start(binary, path, c, job)
                        ports_of = started[key]
                        if ports_of is None:
                            continue
                        scrape = ports_of.get(cport)
                        if scrape is None:
                            problems.append(f"{job}: container port {cport} is none of {binary}'s listen addresses")
                            continue
                        jobs.setdefault(job, []).append({"targets": [f"127.0.0.1:{scrape}"],
                                                         "path": ep.get("path", "/metrics")})
    if not jobs:
        for n in notes:
            print(f"note: {n}", file=sys.stderr)
        for p in problems:
            print(f"error: {p}", file=sys.stderr)
        if problems:
            sys.exit(1)
        print("no binary built: the scrape path was derived and checked, not run")
        return

    scrape_configs = []
    for job, eps in jobs.items():
        for i, ep in enumerate(eps):
            scrape_configs.append({"job_name": f"{job}-{i}", "metrics_path": ep["path"],
                                   "static_configs": [{"targets": ep["targets"], "labels": {"job": job}}],
                                   "honor_labels": False})
    # job_name must be unique per endpoint; the target's `job` label (what the
    # ServiceMonitor's jobLabel gives) overrides it.
    prom_cfg = work / "prometheus.yml"
    prom_cfg.write_text(yaml.safe_dump({"global": {"scrape_interval": "1s", "scrape_timeout": "900ms"},
                                        "scrape_configs": scrape_configs}))
    prom_port = free_port()
    prom_log = open(work / "prometheus.log", "w")
    prom = subprocess.Popen([args.prometheus, f"--config.file={prom_cfg}", f"--storage.tsdb.path={work}/data",
                             f"--web.listen-address=127.0.0.1:{prom_port}"], stdout=prom_log, stderr=subprocess.STDOUT)
    try:
        deadline = time.time() + 40
        expected = sum(len(e) for e in jobs.values())
        ups = []
        while time.time() < deadline:
            time.sleep(1)
            try:
                ups = query(prom_port, "up")
            except OSError:
                continue
            if len(ups) == expected and all(u["value"][1] == "1" for u in ups):
                break
        down = [u["metric"] for u in ups if u["value"][1] != "1"]
        if len(ups) != expected or down:
            problems.append(f"targets not all up after 40 s: {len(ups)} of {expected}, down {down}")
        time.sleep(3)
        app = '{__name__!~"up|scrape_.*", job!=""}'
        per_job = {r["metric"]["job"]: int(r["value"][1]) for r in query(prom_port, f"count by (job) ({app})")}
        scraped = {r["metric"]["job"]: int(float(r["value"][1]))
                   for r in query(prom_port, "sum by (job) (scrape_samples_scraped)")}
        unknown = sorted(set(per_job) - set(jobs))
        if unknown:
            problems.append(f"series under jobs no ServiceMonitor defines: {unknown}")
        for job in sorted(jobs):
            if per_job.get(job, 0) == 0:
                problems.append(f"{job}: no series")
            elif per_job[job] != scraped.get(job):
                problems.append(f"{job}: {per_job[job]} series in Prometheus, {scraped.get(job)} samples per scrape")
        names = query(prom_port, f"count by (__name__) ({app})")
        for job in sorted(jobs):
            print(f"{job}: {per_job.get(job, 0)} series, each once ({scraped.get(job)} samples per scrape)")
        print(f"{len(names)} metric names; e.g. " + ", ".join(sorted(n["metric"]["__name__"] for n in names)[:6]))
    finally:
        stop_processes([prom] + [proc for _, proc in runs])
    for n in notes:
        print(f"note: {n}", file=sys.stderr)
    for p in problems:
        print(f"error: {p}", file=sys.stderr)
    if problems:
        for f in sorted(work.glob("*.log")):
            print(f"--- {f.name}\n" + f.read_text()[-2000:], file=sys.stderr)
    shutil.rmtree(work, ignore_errors=True)
    if problems:
        sys.exit(1)


if __name__ == "__main__":
    main()
