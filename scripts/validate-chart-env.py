"""Starts the real binaries with the environment the chart gives their pods.

    validate-chart-env.py [--require] BIN_DIR MODELS_DIR RENDERED.yaml...

For every Deployment container running backend-api, resize-svc, filter-svc or
ai-detect-svc, the environment is assembled as the kubelet would: envFrom
ConfigMaps and Secrets of the same rendering, env values, secretKeyRef and
fieldRef, then $(VAR) references. Listen addresses keep their host with a free
port; ai-detect's /models and ONNX Runtime library point at MODELS_DIR (what
scripts/setup.sh installs). Each binary runs for 4 seconds: a line
"configuration error" (how the binaries refuse a bad setting), or exiting on its
own, fails the check. Peers (MinIO, PostgreSQL, the collector) are not
reachable here: the binaries stay up and report NOT_SERVING, as in a cluster
whose dependencies are still starting.

Variables the chart sets that a binary's --help does not list are reported as
notes (settings the binary does not read, or does not read yet).

Without --require, a binary missing from BIN_DIR is skipped with a note.
"""

import argparse
import os
import pathlib
import re
import subprocess
import sys
import tempfile
import time

from chartpod import FIELD_VALUES, STAND_INS, container_env, free_port, load_rendering, stop_processes

BINARIES = ("backend-api", "resize-svc", "filter-svc", "ai-detect-svc")
LISTEN = ("GRPC_LISTEN_ADDR", "HTTP_LISTEN_ADDR", "METRICS_LISTEN_ADDR", "GRPC_HEALTH_LISTEN_ADDR")
# gRPC TLS files the pods mount from a Secret: which stand-in file each names.
GRPC_TLS_FILES = {"GRPC_TLS_CERT": "tls.crt", "GRPC_TLS_KEY": "tls.key", "GRPC_TLS_CLIENT_CA": "tls.crt",
                  "GRPC_TLS_CA": "tls.crt", "GRPC_TLS_CLIENT_CERT": "tls.crt", "GRPC_TLS_CLIENT_KEY": "tls.key"}
def help_variables(binary):
    out = subprocess.run([binary, "--help"], capture_output=True, text=True, timeout=20)
    return set(re.findall(r"\b([A-Z][A-Z0-9_]{2,})\b", out.stdout + out.stderr))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--require", action="store_true")
    ap.add_argument("bin_dir", type=pathlib.Path)
    ap.add_argument("models_dir", type=pathlib.Path)
    ap.add_argument("files", nargs="+")
    args = ap.parse_args()
    args.models_dir = args.models_dir.resolve()
    problems, notes, runs = [], set(), []
    known = {}
    tmp = tempfile.TemporaryDirectory(prefix="chart-env-")
    work = pathlib.Path(tmp.name)

    def unavailable(msg):
        """Something a binary needs is not here: an error with --require, else a note."""
        if args.require:
            problems.append(msg)
        else:
            notes.add(msg)

    for file in args.files:
        docs, configmaps, secrets = load_rendering(file)
        for d in docs:
            if d["kind"] != "Deployment":
                continue
            for c in d["spec"]["template"]["spec"]["containers"]:
                binary = c["image"].rsplit("/", 1)[-1].split(":", 1)[0]
                if binary not in BINARIES:
                    continue
                path = args.bin_dir / binary
                if not path.exists():
                    unavailable(f"{path} is not built; {binary} not started")
                    continue
                env = container_env(c, configmaps, secrets, FIELD_VALUES, STAND_INS)
                if binary not in known:
                    known[binary] = help_variables(path)
                extra = sorted(k for k in env if k not in known[binary]
                               and not k.startswith(("OTEL_", "POD_", "NODE_", "AWS_", "KAFKA_")))
                if extra:
                    notes.add(f"{binary} --help does not list {', '.join(extra)}")
                for key in LISTEN:
                    if key in env:
                        host = env[key].rsplit(":", 1)[0]
                        env[key] = f"{host}:{free_port()}"
                if binary == "ai-detect-svc":
                    if not (args.models_dir / "lib" / "libonnxruntime.so").exists():
                        unavailable(f"{args.models_dir} has no ONNX Runtime (scripts/setup.sh); ai-detect-svc not started")
                        continue
                    env["MODEL_DIR"] = str(args.models_dir)
                    env["ORT_DYLIB_PATH"] = str(args.models_dir / "lib" / "libonnxruntime.so")
                if "KAFKA_SSL_CA_LOCATION" in env:
                    # The pod mounts the CA from a Secret; here a throwaway
                    # self-signed one stands in, since the Kafka client reads
                    # the file at start and refuses a missing one.
                    ca = work / "kafka-ca.crt"
                    if not ca.exists():
                        subprocess.run(
                            ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
                             "-subj", "/CN=validate-chart-env", "-keyout", str(work / "kafka-ca.key"),
                             "-out", str(ca)],
                            check=True, capture_output=True)
                    env["KAFKA_SSL_CA_LOCATION"] = str(ca)
                if any(k in env for k in GRPC_TLS_FILES):
                    # The mounted gRPC TLS Secret: a throwaway self-signed
                    # certificate stands in for the certificate, the key and
                    # the CA (the binaries read and check all three at start).
                    if not (work / "tls.crt").exists():
                        subprocess.run(
                            ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256",
                             "-nodes", "-days", "1", "-subj", "/CN=validate-chart-env",
                             "-addext", "subjectAltName=DNS:localhost",
                             "-keyout", str(work / "tls.key"), "-out", str(work / "tls.crt")],
                            check=True, capture_output=True)
                    for key, file in GRPC_TLS_FILES.items():
                        if key in env:
                            env[key] = str(work / file)
                if env.get("DATABASE_URL", "").startswith("sqlite://"):
                    env["DATABASE_URL"] = f"sqlite://{work}/{len(runs)}.db"
                env["PATH"] = os.environ.get("PATH", "/usr/bin:/bin")
                log = open(work / f"{len(runs)}.log", "w+")
                proc = subprocess.Popen([str(path)], env=env, stdout=log, stderr=subprocess.STDOUT, cwd=work)
                runs.append((f"{file}: {d['metadata']['name']} ({binary})", proc, log))
    time.sleep(4)
    still_running = [proc.poll() is None for _, proc, _ in runs]
    stop_processes([proc for _, proc, _ in runs])
    for (where, proc, log), alive in zip(runs, still_running):
        log.seek(0)
        text = log.read()
        bad = [line for line in text.splitlines() if "configuration error" in line]
        if bad:
            problems.append(f"{where}: {bad[0]}")
        elif not alive:
            # The binaries stay up (NOT_SERVING) while their peers are away; one
            # that exits on its own did not start with this environment.
            problems.append(f"{where} exited with {proc.returncode} within 4 s: {text.strip().splitlines()[-1:]}")
    for n in sorted(notes):
        print(f"note: {n}", file=sys.stderr)
    for p in problems:
        print(f"error: {p}", file=sys.stderr)
    if problems:
        sys.exit(1)
    print(f"{len(runs)} pods' environments accepted by the binaries")


if __name__ == "__main__":
    main()
