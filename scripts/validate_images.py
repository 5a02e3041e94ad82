"""Runs the system from its container images the way the chart runs it.

    validate_images.py --work DIR --models DIR --fixtures DIR RENDERED.yaml USER-SECRETS.yaml

Every Deployment of the rendering whose image is one of ours becomes a "pod":
its own network namespace on a bridge (so every pod listens on the ports the
manifest says, as in a cluster), the image's filesystem through buildah, and
from the manifest, not retyped: command and args (else the image's entrypoint
and cmd), the environment as the kubelet builds it (ConfigMaps, Secrets,
fieldRefs, $(VAR)), the user and group of the security contexts, a read-only
root filesystem where readOnlyRootFilesystem says so, and the volumes
(emptyDir, the models claim as MODELS DIR, ConfigMaps, Secrets). Service names
resolve to the pods behind them through each pod's /etc/hosts.

Then, with nothing but the images and the manifest:
  * each pod passes its own startup and readiness probes (gRPC health through
    the imageflowctl image, HTTP from outside);
  * each process runs as the manifest's non-root user, and cannot write to its
    root filesystem where readOnlyRootFilesystem is set;
  * the README's pipeline (resize → ai_detection → sharpen) runs through the
    backend via the imageflowctl image, against the S3 server and PostgreSQL
    the values point at, with the detections right and the outputs in S3;
  * the web UI and its assets are served from the backend image;
  * each pod stops on SIGTERM within its terminationGracePeriodSeconds.

The bridge, the S3 server and PostgreSQL are set up by scripts/validate-images.sh.
"""

import argparse
import json
import os
import pathlib
import re
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request

from chartpod import container_env, load_rendering

BRIDGE = "ifcbr0"
SUBNET = "10.89.77"
NAMESPACE = "image-processing"
CTL_IMAGE_NAME = "imageflowctl"
OURS = ("backend-api", "resize-svc", "filter-svc", "ai-detect-svc")
# What the README's photo shows after resize to 800x450 (scripts/run-local.sh).
EXPECTED_CLASSES = {"cup", "dining table"}


def log(msg):
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def sh(*argv, check=True, capture=True, **kw):
    r = subprocess.run(argv, capture_output=capture, text=True, **kw)
    if check and r.returncode != 0:
        raise SystemExit(f"{' '.join(argv)} failed ({r.returncode}): {(r.stderr or r.stdout).strip()[-2000:]}")
    return r.stdout.strip() if capture else ""


def binary_of(image):
    return image.rsplit("/", 1)[-1].split(":", 1)[0]


class Pod:
    def __init__(self, index, deployment, work):
        self.deployment = deployment
        self.name = deployment["metadata"]["name"]
        self.spec = deployment["spec"]["template"]["spec"]
        self.labels = deployment["spec"]["template"]["metadata"].get("labels", {})
        self.container = self.spec["containers"][0]
        self.image = self.container["image"]
        self.ip = f"{SUBNET}.{10 + index}"
        self.netns = f"ifc-pod{index}"
        self.veth = f"ifcv{index}"
        self.dir = work / self.name
        self.dir.mkdir(parents=True, exist_ok=True)
        self.log_path = self.dir / "container.log"
        self.ctr = None
        self.rootfs = None
        self.ro_mounts = []
        self.proc = None

    # --- what the manifest says ---------------------------------------------
    def security(self):
        pod = self.spec.get("securityContext", {})
        ctr = self.container.get("securityContext", {})
        uid = ctr.get("runAsUser", pod.get("runAsUser"))
        gid = ctr.get("runAsGroup", pod.get("runAsGroup"))
        non_root = ctr.get("runAsNonRoot", pod.get("runAsNonRoot", False))
        return uid, gid, non_root, bool(ctr.get("readOnlyRootFilesystem"))

    def port(self, ref):
        if isinstance(ref, int):
            return ref
        for p in self.container.get("ports", []):
            if p.get("name") == ref:
                return p["containerPort"]
        raise SystemExit(f"{self.name}: no container port named {ref}")

    # --- start ----------------------------------------------------------------
    def network(self):
        sh("ip", "netns", "add", self.netns)
        sh("ip", "link", "add", self.veth, "type", "veth", "peer", "name", "eth0", "netns", self.netns)
        sh("ip", "link", "set", self.veth, "master", BRIDGE, "up")
        inside = ("ip", "netns", "exec", self.netns)
        sh(*inside, "ip", "addr", "add", f"{self.ip}/24", "dev", "eth0")
        sh(*inside, "ip", "link", "set", "eth0", "up")
        sh(*inside, "ip", "link", "set", "lo", "up")

    def volumes(self, rendering, models):
        _, configmaps, secrets = rendering
        by_name = {v["name"]: v for v in self.spec.get("volumes", [])}
        args = []
        for mount in self.container.get("volumeMounts", []):
            vol = by_name[mount["name"]]
            ro = mount.get("readOnly", False)
            if "emptyDir" in vol:
                src = self.dir / "volumes" / vol["name"]
                src.mkdir(parents=True, exist_ok=True)
                src.chmod(0o1777)  # as the kubelet makes an emptyDir
            elif "persistentVolumeClaim" in vol:
                if "models" not in vol["persistentVolumeClaim"]["claimName"]:
                    raise SystemExit(f"{self.name}: no stand-in for claim {vol['persistentVolumeClaim']}")
                src, ro = models, True
            elif "configMap" in vol or "secret" in vol:
                data = (configmaps.get(vol["configMap"]["name"]) if "configMap" in vol
                        else secrets.get(vol["secret"]["secretName"]))
                if data is None:
                    raise SystemExit(f"{self.name}: volume {vol['name']} names an object that is not rendered")
                src = self.dir / "volumes" / vol["name"]
                src.mkdir(parents=True, exist_ok=True)
                for key, value in data.items():
                    (src / key).write_text(value)
            else:
                raise SystemExit(f"{self.name}: volume kind of {vol} is not supported here")
            args += ["--volume", f"{src}:{mount['mountPath']}:{'ro' if ro else 'rw'}"]
        return args

    def argv(self):
        config = json.loads(sh("buildah", "inspect", "--type", "image", self.image))["OCIv1"]["config"]
        command = self.container.get("command") or config.get("Entrypoint") or []
        args = self.container.get("args")
        if args is None:
            args = [] if self.container.get("command") else (config.get("Cmd") or [])
        return command + args

    def start(self, rendering, models, hosts):
        uid, gid, non_root, read_only = self.security()
        if non_root and not uid:
            raise SystemExit(f"{self.name}: runAsNonRoot without a non-zero runAsUser")
        self.network()
        env = container_env(self.container, rendering[1], rendering[2], {
            "metadata.name": f"{self.name}-0", "metadata.namespace": NAMESPACE, "spec.nodeName": "validate-node",
            "status.podIP": self.ip, "status.hostIP": f"{SUBNET}.1"})
        (self.dir / "hosts").write_text(
            f"127.0.0.1 localhost\n{self.ip} {self.name}-0\n"
            + "".join(f"{ip} {' '.join(names)}\n" for ip, names in hosts.items()))
        self.ctr = sh("buildah", "from", "--quiet", "--pull=never", "--name", f"validate-{self.name}", self.image)
        self.rootfs = pathlib.Path(sh("buildah", "mount", self.ctr))
        volume_args = self.volumes(rendering, models)
        # Mount points buildah binds over must exist before the root goes read-only.
        for f in ("etc/hosts", "etc/resolv.conf", "etc/hostname"):
            (self.rootfs / f).parent.mkdir(parents=True, exist_ok=True)
            (self.rootfs / f).touch()
        for i in range(0, len(volume_args), 2):
            (self.rootfs / volume_args[i + 1].split(":")[1].lstrip("/")).mkdir(parents=True, exist_ok=True)
        if read_only:
            # The root read-only, as readOnlyRootFilesystem makes it; /run stays
            # writable for buildah's own .containerenv (a runtime's tmpfs there).
            run_dir = self.dir / "run"
            run_dir.mkdir(exist_ok=True)
            (self.rootfs / "run").mkdir(exist_ok=True)
            sh("mount", "--bind", str(self.rootfs), str(self.rootfs))
            sh("mount", "--bind", str(run_dir), str(self.rootfs / "run"))
            sh("mount", "-o", "remount,bind,ro", str(self.rootfs))
            self.ro_mounts = [self.rootfs / "run", self.rootfs]
        argv = ["ip", "netns", "exec", self.netns, "buildah", "run", "--isolation", "chroot", "--no-hosts",
                "--hostname", f"{self.name}-0", "--volume", f"{self.dir / 'hosts'}:/etc/hosts:ro"]
        if uid is not None:
            argv += ["--user", f"{uid}:{gid if gid is not None else uid}"]
        if self.container.get("workingDir"):
            argv += ["--workingdir", self.container["workingDir"]]
        for key, value in env.items():
            argv += ["--env", f"{key}={value}"]
        argv += volume_args + [self.ctr, "--"] + self.argv()
        log(f"{self.name}: {self.image} as {uid}:{gid} on {self.ip}"
            f"{', read-only root' if read_only else ''}: {' '.join(self.argv())}")
        self.log_file = open(self.log_path, "w")
        self.proc = subprocess.Popen(argv, stdout=self.log_file, stderr=subprocess.STDOUT, start_new_session=True)

    # --- observe --------------------------------------------------------------
    def app_pid(self):
        """The container's main process (the manifest's command), found in its network namespace."""
        want = self.argv()[0]
        for pid in sh("ip", "netns", "pids", self.netns, check=False).split():
            try:
                exe = os.readlink(f"/proc/{pid}/exe")
            except OSError:
                continue
            # buildah's own processes live in the namespace too; the app is the
            # one running the manifest's command (a path inside the image).
            if exe.endswith(want) and os.path.basename(exe) != "buildah":
                return int(pid)
        return None

    def tail(self, n=40):
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-n:])
        except OSError:
            return ""

    def alive(self):
        return self.proc is not None and self.proc.poll() is None

    # --- stop -----------------------------------------------------------------
    def stop(self, check_grace):
        """SIGTERM to the process, as the kubelet sends it; returns the seconds it took to exit."""
        took = None
        pid = self.app_pid() if self.alive() else None
        if pid:
            grace = self.spec.get("terminationGracePeriodSeconds", 30)
            started = time.monotonic()
            os.kill(pid, signal.SIGTERM)
            while time.monotonic() - started < grace and os.path.exists(f"/proc/{pid}"):
                time.sleep(0.1)
            took = time.monotonic() - started
            if os.path.exists(f"/proc/{pid}"):
                os.kill(pid, signal.SIGKILL)
                took = None
        if self.proc is not None:
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        # Whatever is left in the pod's namespace (buildah's helpers, a process
        # that ignored SIGTERM) goes with the pod.
        for left in sh("ip", "netns", "pids", self.netns, check=False).split():
            subprocess.run(["kill", "-9", left], capture_output=True)
        for m in self.ro_mounts:
            subprocess.run(["umount", str(m)], capture_output=True)
        if self.ctr:
            subprocess.run(["buildah", "rm", self.ctr], capture_output=True)
        subprocess.run(["ip", "netns", "del", self.netns], capture_output=True)
        subprocess.run(["ip", "link", "del", self.veth], capture_output=True)
        if check_grace and pid and took is None:
            raise SystemExit(f"{self.name} did not exit within terminationGracePeriodSeconds after SIGTERM:\n"
                             f"{self.tail()}")
        return took


class Ctl:
    """The imageflowctl image, run on the host side of the bridge (as a client would)."""

    def __init__(self, image, work):
        self.ctr = sh("buildah", "from", "--quiet", "--pull=never", "--name", "validate-imageflowctl", image)
        self.work = work

    def run(self, *args, volumes=(), token=None, timeout=120):
        argv = ["buildah", "run", "--isolation", "chroot", "--user", "65532:65532"]
        for v in volumes:
            argv += ["--volume", v]
        if token:
            argv += ["--env", f"IMAGEFLOW_API_TOKEN={token}"]
        argv += [self.ctr, "--", "/usr/local/bin/app", *args]
        return subprocess.run(argv, capture_output=True, text=True, timeout=timeout)

    def close(self):
        subprocess.run(["buildah", "rm", self.ctr], capture_output=True)


def http(url, token=None, timeout=10):
    req = urllib.request.Request(url, headers={"Authorization": f"Bearer {token}"} if token else {})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.status, r.headers.get("content-type", ""), r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.headers.get("content-type", ""), e.read()
    except (urllib.error.URLError, OSError) as e:
        return None, "", str(e).encode()


def probe_once(pod, probe, ctl):
    if "grpc" in probe:
        r = ctl.run("health", f"http://{pod.ip}:{pod.port(probe['grpc']['port'])}", timeout=30)
        return r.returncode == 0, (r.stdout + r.stderr).strip()
    if "httpGet" in probe:
        get = probe["httpGet"]
        code, _, body = http(f"http://{pod.ip}:{pod.port(get['port'])}{get.get('path', '/')}",
                             timeout=probe.get("timeoutSeconds", 1) + 1)
        return code is not None and 200 <= code < 400, f"HTTP {code}: {body[:300].decode(errors='replace')}"
    raise SystemExit(f"{pod.name}: probe kind of {probe} is not supported here")


def wait_probe(pod, kind, ctl):
    probe = pod.container.get(kind)
    if not probe:
        return
    period = probe.get("periodSeconds", 10)
    # Startup probes get their whole budget; the others as many tries.
    budget = probe.get("failureThreshold", 3) * period + probe.get("initialDelaySeconds", 0)
    deadline = time.monotonic() + budget
    last = ""
    while time.monotonic() < deadline:
        if not pod.alive():
            raise SystemExit(f"{pod.name} exited before its {kind} passed:\n{pod.tail()}")
        ok, last = probe_once(pod, probe, ctl)
        if ok:
            return
        time.sleep(min(period, 1))
    raise SystemExit(f"{pod.name}: {kind} still failing after {budget} s ({last}):\n{pod.tail()}")


def check_user_and_root(pod):
    uid, gid, _, read_only = pod.security()
    pid = pod.app_pid()
    if pid is None:
        raise SystemExit(f"{pod.name}: its process was not found in {pod.netns}")
    status = pathlib.Path(f"/proc/{pid}/status").read_text()
    real_uid = int(re.search(r"^Uid:\s+(\d+)", status, re.M).group(1))
    real_gid = int(re.search(r"^Gid:\s+(\d+)", status, re.M).group(1))
    if real_uid == 0 or (uid is not None and real_uid != uid) or (gid is not None and real_gid != gid):
        raise SystemExit(f"{pod.name} runs as {real_uid}:{real_gid}, the manifest says {uid}:{gid}")
    probe = pathlib.Path(f"/proc/{pid}/root/.validate-images-write-check")
    try:
        probe.write_text("x")
        probe.unlink()
        writable = True
    except OSError as e:
        if e.errno != 30:  # EROFS
            raise
        writable = False
    if read_only and writable:
        raise SystemExit(f"{pod.name}: readOnlyRootFilesystem is set but its root filesystem is writable")
    return f"uid {real_uid}, gid {real_gid}, root filesystem {'writable' if writable else 'read-only'}"


def run_pipeline(backend, ctl, token, fixtures, work, s3_data):
    out = work / "ctl-out"
    out.mkdir(exist_ok=True)
    out.chmod(0o777)
    r = ctl.run("run", "/fixtures/photo-1920x1080.jpg", "-o", "/out/pipeline-output.jpg",
                "--api", f"http://{backend.ip}:{backend.port('http')}",
                volumes=[f"{fixtures}:/fixtures:ro", f"{out}:/out:rw"], token=token, timeout=300)
    text = (r.stdout + r.stderr).strip()
    print(text, file=sys.stderr)
    if r.returncode != 0:
        raise SystemExit(f"imageflowctl run failed ({r.returncode}); backend log:\n{backend.tail()}")
    m = re.search(r"^execution (\S+) completed", text, re.M)
    if not m:
        raise SystemExit("imageflowctl run did not report a completed execution")
    code, _, body = http(f"http://{backend.ip}:{backend.port('http')}/v1/executions/{m.group(1)}", token)
    if code != 200:
        raise SystemExit(f"GET the execution: HTTP {code}: {body[:300]!r}")
    record = json.loads(body)
    steps = {s["stepId"]: s for s in record["steps"]}
    if record["status"] != "completed" or any(s["status"] != "completed" for s in steps.values()):
        raise SystemExit(f"the execution did not complete: {json.dumps(record)[:2000]}")
    detect = steps["detect"]
    w, h = detect["output"]["width"], detect["output"]["height"]
    found = {}
    for d in detect.get("detections") or []:
        b = d["bbox"]
        if not (0 <= b["x1"] < b["x2"] <= w and 0 <= b["y1"] < b["y2"] <= h):
            raise SystemExit(f"a box outside the {w}x{h} image: {d}")
        found[d["class_name"]] = max(found.get(d["class_name"], 0), d["confidence"])
    missing = EXPECTED_CLASSES - {c for c, conf in found.items() if conf >= 0.5}
    if missing:
        raise SystemExit(f"detections {found} lack {sorted(missing)} (expected on the README's photo)")
    image = (out / "pipeline-output.jpg").read_bytes()
    if image[:3] != b"\xff\xd8\xff" or len(image) < 10_000:
        raise SystemExit(f"the pipeline output is not a JPEG photo ({len(image)} bytes)")
    keys = [s["output"]["object_key"] for s in record["steps"]]
    stored = [k for k in keys if (s3_data / "imageflow-files" / k).is_file()]
    if stored != keys:
        raise SystemExit(f"outputs missing from the S3 server: {sorted(set(keys) - set(stored))}")
    return (f"execution {record['execution_id'] if 'execution_id' in record else m.group(1)} completed: "
            f"{', '.join(f'{c} {conf:.2f}' for c, conf in sorted(found.items()))}; "
            f"{len(keys)} outputs in S3; {len(image)} byte JPEG")


def check_ui(backend):
    base = f"http://{backend.ip}:{backend.port('http')}"
    code, ctype, body = http(base + "/")
    if code != 200 or "text/html" not in ctype:
        raise SystemExit(f"GET / from the backend image: HTTP {code} {ctype}: {body[:200]!r}")
    assets = re.findall(rb'(?:src|href)="(/assets/[^"]+\.js)"', body)
    if not assets:
        raise SystemExit(f"the UI's index.html names no script under /assets: {body[:400]!r}")
    code, ctype, js = http(base + assets[0].decode())
    if code != 200 or "javascript" not in ctype or len(js) < 1000:
        raise SystemExit(f"GET {assets[0].decode()}: HTTP {code} {ctype}, {len(js)} bytes")
    return f"index.html and {assets[0].decode()} ({len(js)} bytes)"


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--work", type=pathlib.Path, required=True)
    ap.add_argument("--models", type=pathlib.Path, required=True)
    ap.add_argument("--fixtures", type=pathlib.Path, required=True)
    ap.add_argument("--s3-data", type=pathlib.Path, required=True)
    ap.add_argument("--ctl-image", required=True)
    ap.add_argument("files", nargs="+")
    args = ap.parse_args()
    rendering = load_rendering(*args.files)
    docs = rendering[0]
    deployments = [d for d in docs if d["kind"] == "Deployment"
                   and binary_of(d["spec"]["template"]["spec"]["containers"][0]["image"]) in OURS]
    others = sorted(d["metadata"]["name"] for d in docs if d["kind"] in ("Deployment", "DaemonSet", "StatefulSet")
                    and d not in deployments)
    if others:
        log(f"not run (images from elsewhere): {', '.join(others)}")
    if {binary_of(d["spec"]["template"]["spec"]["containers"][0]["image"]) for d in deployments} != set(OURS):
        raise SystemExit(f"the rendering does not deploy all of {OURS}")
    pods = [Pod(i, d, args.work) for i, d in enumerate(deployments)]

    # Service name → the pods it selects, under the names a pod can use.
    hosts = {}
    for svc in (d for d in docs if d["kind"] == "Service"):
        selector = svc["spec"].get("selector") or {}
        name = svc["metadata"]["name"]
        for pod in pods:
            if selector and all(pod.labels.get(k) == v for k, v in selector.items()):
                hosts.setdefault(pod.ip, []).extend(
                    [name, f"{name}.{NAMESPACE}", f"{name}.{NAMESPACE}.svc", f"{name}.{NAMESPACE}.svc.cluster.local"])

    ctl = Ctl(args.ctl_image, args.work)
    failed = True
    try:
        for pod in pods:
            pod.start(rendering, args.models.resolve(), hosts)
        for pod in pods:
            started = time.monotonic()
            wait_probe(pod, "startupProbe", ctl)
            wait_probe(pod, "readinessProbe", ctl)
            wait_probe(pod, "livenessProbe", ctl)
            log(f"{pod.name}: startup, readiness and liveness probes pass "
                f"({time.monotonic() - started:.1f} s); {check_user_and_root(pod)}")
        backend = next(p for p in pods if binary_of(p.image) == "backend-api")
        token = rendering[2]
        tokens = next((s["IMAGEFLOW_API_TOKENS"] for s in token.values() if "IMAGEFLOW_API_TOKENS" in s), "")
        token = tokens.split(",")[0].split(":", 1)[1] if tokens else None
        log(f"UI: {check_ui(backend)}")
        log(f"pipeline: {run_pipeline(backend, ctl, token, args.fixtures.resolve(), args.work, args.s3_data)}")
        failed = False
    finally:
        problems = []
        for pod in reversed(pods):
            try:
                took = pod.stop(check_grace=not failed)
            except SystemExit as e:
                problems.append(str(e))
                continue
            if not failed and took is not None:
                log(f"{pod.name}: exited {took:.1f} s after SIGTERM")
        ctl.close()
    if problems:
        raise SystemExit("\n".join(problems))
    log(f"{len(pods)} pods ran from their images as the chart runs them")


if __name__ == "__main__":
    main()
