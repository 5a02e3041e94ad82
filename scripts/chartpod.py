"""What a pod of a `helm template` rendering gets, read as the kubelet reads it.

Shared by validate-chart-env.py (the binaries started with the pods'
environments) and validate_images.py (the images run as the pods).
"""

import base64
import re
import socket
import subprocess

import yaml

# Stand-ins for Secrets created outside the chart (existingSecret), shaped like
# the real values so the binaries parse them.
STAND_INS = {
    "DATABASE_URL": "postgres://imageflow@postgres.databases.svc:5432/imageflow",
    "IMAGEFLOW_API_TOKENS": "ops:validate-token-0123456789abcdef",
    "AWS_ACCESS_KEY_ID": "validate-access-key",
    "AWS_SECRET_ACCESS_KEY": "validate-secret-key-0123456789",
}
# What fieldRefs read in a pod on a made-up node.
FIELD_VALUES = {"metadata.name": "imageflow-pod-0", "metadata.namespace": "image-processing",
                "spec.nodeName": "k3s-node-1", "status.podIP": "10.42.0.10", "status.hostIP": "10.0.0.10"}


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def stop_processes(procs, timeout=30):
    """SIGTERM to each, then SIGKILL to any still running after `timeout` s."""
    for proc in procs:
        proc.terminate()
    for proc in procs:
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def secret_data(obj):
    data = {k: base64.b64decode(v).decode() for k, v in (obj.get("data") or {}).items()}
    data.update(obj.get("stringData") or {})
    return data


def load_rendering(*files):
    """Every object of the files, with ConfigMaps and Secrets by name."""
    docs = [d for f in files for d in yaml.safe_load_all(open(f)) if d]
    configmaps = {d["metadata"]["name"]: d.get("data") or {} for d in docs if d["kind"] == "ConfigMap"}
    secrets = {d["metadata"]["name"]: secret_data(d) for d in docs if d["kind"] == "Secret"}
    return docs, configmaps, secrets


def container_env(container, configmaps, secrets, field_values, stand_ins=None):
    """The container's environment: envFrom first, then env in order, with
    $(VAR) expanded against what came before. A secretKeyRef to a Secret that
    is not in `secrets` takes its value from `stand_ins` when given (a Secret
    created outside the chart), else is an error."""
    env = {}
    for src in container.get("envFrom", []):
        if "configMapRef" in src:
            env.update(configmaps.get(src["configMapRef"]["name"], {}))
        elif "secretRef" in src:
            ref = src["secretRef"]
            if ref["name"] in secrets:
                env.update(secrets[ref["name"]])
            elif not ref.get("optional"):
                raise SystemExit(f"secret {ref['name']} is neither rendered nor optional")
    for item in container.get("env", []):
        name = item["name"]
        if "value" in item:
            # $(VAR) refers to variables defined earlier, as the kubelet expands them.
            env[name] = re.sub(r"\$\((\w+)\)", lambda m: env.get(m.group(1), m.group(0)), item["value"])
        elif "secretKeyRef" in item["valueFrom"]:
            ref = item["valueFrom"]["secretKeyRef"]
            if ref["name"] in secrets and ref["key"] in secrets[ref["name"]]:
                env[name] = secrets[ref["name"]][ref["key"]]
            elif ref.get("optional"):
                continue
            elif stand_ins is not None:
                env[name] = stand_ins.get(ref["key"], "validate")
            else:
                raise SystemExit(f"{name}: secret {ref['name']} has no key {ref['key']}")
        elif "configMapKeyRef" in item["valueFrom"]:
            ref = item["valueFrom"]["configMapKeyRef"]
            env[name] = configmaps.get(ref["name"], {})[ref["key"]]
        elif "fieldRef" in item["valueFrom"]:
            env[name] = field_values[item["valueFrom"]["fieldRef"]["fieldPath"]]
        elif "resourceFieldRef" in item["valueFrom"]:
            env[name] = resource_value(container, item["valueFrom"]["resourceFieldRef"])
    return env


def resource_value(container, ref):
    """limits.cpu and the like, in the units the kubelet gives (cores rounded up, bytes)."""
    kind, _, resource = ref["resource"].partition(".")
    value = str(container.get("resources", {}).get(kind, {}).get(resource, "0"))
    if resource == "cpu":
        cores = float(value[:-1]) / 1000 if value.endswith("m") else float(value)
        return str(max(1, -(-cores // 1)).__int__())
    units = {"Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "K": 10**3, "M": 10**6, "G": 10**9}
    for suffix, factor in units.items():
        if value.endswith(suffix):
            return str(int(float(value[: -len(suffix)]) * factor))
    return value
