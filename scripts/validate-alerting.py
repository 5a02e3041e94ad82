#!/usr/bin/env python3
"""Checks the chart's alerting with the real Debian tools (scripts/validate-deploy.sh
runs it; scripts/deploy-tools.sh installs them):

1. the Alertmanager configuration the chart renders (templates/alertmanager.yaml),
   with and without a maintenance window, passes `amtool check-config`;
2. `amtool config routes test --verify.receivers` sends one alert of each priority
   to its receiver (P1 pager, P2 pager+chat by time of day, P3 chat, P4 ticket),
   and a wrong expectation is refused (the check is live);
3. alerts end to end: a real Prometheus scrapes a loopback exporter whose
   pg_up 0 trips the chart's ImageflowDatabaseDown (rules from the rendered
   PrometheusRule; a test copy with `for: 0s`), sends it to a real Alertmanager
   running the chart's configuration with the receivers pointed (through the
   chart's values) at a webhook on 127.0.0.1, and the webhook gets it on the
   pager path with its runbook_url. The same exporter also trips
   ImageflowDatabaseConnectionsHigh in that namespace, which the cause inhibits
   (never notified, inhibitedBy set), and in a second namespace whose database
   is up, where it is not inhibited and reaches the webhook. Loopback only;
   bounded waits; every process is stopped at the end.

    validate-alerting.py CHART HELM AMTOOL PROMETHEUS ALERTMANAGER
"""
import datetime
import http.server
import json
import os
import queue
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request

import yaml

from chartpod import free_port, stop_processes

chart, helm, amtool, prometheus_bin, alertmanager_bin = sys.argv[1:6]
ALERT = "ImageflowDatabaseDown"
SYMPTOM = "ImageflowDatabaseConnectionsHigh"
NAMESPACE = "image-processing"
OTHER_NAMESPACE = "staging"


def render(*values):
    """The chart's objects rendered with --set-json VALUES, by kind/name."""
    args = [helm, "template", "imageflow", chart, "--namespace", NAMESPACE]
    for v in values:
        args += ["--set-json", v]
    out = subprocess.run(args, check=True, capture_output=True, text=True).stdout
    return {(d["kind"], d["metadata"]["name"]): d for d in yaml.safe_load_all(out) if d}


def amtool_run(*args, check=True):
    return subprocess.run([amtool, *args], capture_output=True, text=True, check=check)


def wait_until(what, predicate, timeout):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if predicate():
                return
        except OSError:
            pass
        time.sleep(0.25)
    sys.exit(f"timed out after {timeout} s waiting for {what}")


def http_ok(url):
    with urllib.request.urlopen(url, timeout=2) as r:
        return r.status == 200


work = tempfile.mkdtemp(prefix="imageflow-alerting-")
procs = []
servers = []
try:
    # --- 1. amtool check-config ------------------------------------------------
    maintenance = json.dumps([{"weekdays": ["saturday", "sunday"],
                               "times": [{"start_time": "02:00", "end_time": "04:00"}],
                               "location": "UTC"}])
    configs = {
        "default": render()[("Secret", "imageflow-alertmanager")],
        "maintenance": render(f"monitoring.alertmanager.maintenanceWindows={maintenance}")[
            ("Secret", "imageflow-alertmanager")],
    }
    for name, secret in configs.items():
        path = os.path.join(work, f"alertmanager-{name}.yaml")
        with open(path, "w") as f:
            f.write(secret["stringData"]["alertmanager.yaml"])
        r = amtool_run("check-config", path, check=False)
        if r.returncode != 0:
            sys.exit(f"amtool check-config ({name} values) failed:\n{r.stdout}{r.stderr}")
        cfg = yaml.safe_load(open(path))
        if name == "maintenance":
            muted = [r for r in cfg["route"]["routes"] if "maintenance" in r.get("mute_time_intervals", [])]
            assert len(muted) == 6, f"maintenance window mutes {len(muted)} of the 6 notifying routes"
        print(f"amtool check-config ({name} values): {len(cfg['inhibit_rules'])} inhibit rules, "
              f"{len(cfg['receivers'])} receivers")

    # --- 2. amtool config routes test -------------------------------------------
    default_cfg = os.path.join(work, "alertmanager-default.yaml")
    rules = yaml.safe_load(yaml.safe_dump(render()[("PrometheusRule", "imageflow")]["spec"]))
    by_priority = {}
    for group in rules["groups"]:
        for rule in group["rules"]:
            if "alert" in rule:
                prio = rule["labels"].get("priority")
                assert prio in ("P1", "P2", "P3", "P4"), f"{rule['alert']} has priority {prio!r}"
                by_priority.setdefault(prio, rule)
    expected = {"P1": "pager", "P2": "pager,chat", "P3": "chat", "P4": "ticket"}
    assert sorted(by_priority) == sorted(expected), f"priorities in use: {sorted(by_priority)}"
    cases = [(expected[p], {"alertname": r["alert"], "namespace": NAMESPACE, **r["labels"]})
             for p, r in sorted(by_priority.items())]
    cases += [("chat", {"alertname": "KubePodCrashLooping", "severity": "critical"}),
              ("ticket", {"alertname": "KubeCPUOvercommit", "severity": "warning"}),
              ("null", {"alertname": "Watchdog", "severity": "none"})]
    for receivers, labels in cases:
        label_args = [f"{k}={v}" for k, v in labels.items()]
        r = amtool_run("config", "routes", "test", f"--config.file={default_cfg}",
                       f"--verify.receivers={receivers}", *label_args, check=False)
        if r.returncode != 0:
            sys.exit(f"{labels} went to {r.stdout.strip()}, expected {receivers}")
        print(f"  {labels['alertname']} ({labels.get('priority', 'no priority')}) -> {receivers}")
    r = amtool_run("config", "routes", "test", f"--config.file={default_cfg}", "--verify.receivers=pager",
                   "priority=P3", "alertname=Probe", check=False)
    assert r.returncode != 0, "amtool accepted a P3 alert routed to the pager: the check is not live"

    # --- 3. one alert end to end --------------------------------------------------
    received = queue.Queue()

    class Webhook(http.server.BaseHTTPRequestHandler):
        def do_POST(self):
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            received.put((self.path, body))
            self.send_response(200)
            self.end_headers()

        def log_message(self, *args):
            pass

    class Exporter(http.server.BaseHTTPRequestHandler):
        # postgres_exporter's names: /down is a database that is down (and was
        # nearly out of connections), /up one that is up and nearly out.
        def do_GET(self):
            up = 1 if self.path == "/up" else 0
            text = ("# TYPE pg_up gauge\n"
                    f"pg_up {up}\n"
                    "# TYPE pg_stat_activity_count gauge\n"
                    'pg_stat_activity_count{datname="imageflow",state="active"} 95\n'
                    "# TYPE pg_settings_max_connections gauge\n"
                    "pg_settings_max_connections 100\n").encode()
            self.send_response(200)
            self.send_header("Content-Type", "text/plain; version=0.0.4")
            self.send_header("Content-Length", str(len(text)))
            self.end_headers()
            self.wfile.write(text)

        def log_message(self, *args):
            pass

    for handler in (Webhook, Exporter):
        server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        servers.append(server)
    hook_port, exporter_port = (s.server_port for s in servers)

    hook = f"http://127.0.0.1:{hook_port}"
    objects = render(*(f'monitoring.alertmanager.receivers.{r}={{"url": "{hook}/{r}"}}'
                       for r in ("pager", "chat", "ticket")))
    am_config = os.path.join(work, "alertmanager-e2e.yaml")
    with open(am_config, "w") as f:
        f.write(objects[("Secret", "imageflow-alertmanager")]["stringData"]["alertmanager.yaml"])
    rules = yaml.safe_load(yaml.safe_dump(objects[("PrometheusRule", "imageflow")]["spec"]))
    for name in (ALERT, SYMPTOM):
        target = [r for g in rules["groups"] for r in g["rules"] if r.get("alert") == name]
        assert len(target) == 1, f"{name} not in the rendered PrometheusRule"
        target[0]["for"] = "0s"  # the test copy only; the chart's rules wait minutes
    rule_file = os.path.join(work, "rules.yaml")
    yaml.safe_dump(rules, open(rule_file, "w"))

    am_port, prom_port = free_port(), free_port()
    prom_config = os.path.join(work, "prometheus.yml")
    yaml.safe_dump({
        "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
        "rule_files": [rule_file],
        "alerting": {"alertmanagers": [{"static_configs": [{"targets": [f"127.0.0.1:{am_port}"]}]}]},
        "scrape_configs": [{"job_name": f"postgres-exporter-{ns}", "metrics_path": path,
                            "static_configs": [{"targets": [f"127.0.0.1:{exporter_port}"],
                                                "labels": {"namespace": ns}}]}
                           for ns, path in ((NAMESPACE, "/down"), (OTHER_NAMESPACE, "/up"))],
    }, open(prom_config, "w"))

    logs = {}
    for name, args in {
        "alertmanager": [alertmanager_bin, f"--config.file={am_config}",
                         f"--storage.path={work}/am-data", f"--web.listen-address=127.0.0.1:{am_port}",
                         "--cluster.listen-address=", "--log.level=warn"],
        "prometheus": [prometheus_bin, f"--config.file={prom_config}",
                       f"--storage.tsdb.path={work}/prom-data", f"--web.listen-address=127.0.0.1:{prom_port}",
                       "--log.level=warn"],
    }.items():
        logs[name] = open(os.path.join(work, f"{name}.log"), "w+")
        procs.append((name, subprocess.Popen(args, stdout=logs[name], stderr=subprocess.STDOUT)))

    def ready(name, port):
        def check():
            for n, p in procs:
                if n == name and p.poll() is not None:
                    logs[name].seek(0)
                    sys.exit(f"{name} exited with {p.returncode}:\n{logs[name].read()}")
            return http_ok(f"http://127.0.0.1:{port}/-/ready")
        return check

    wait_until("Alertmanager to be ready", ready("alertmanager", am_port), 30)
    wait_until("Prometheus to be ready", ready("prometheus", prom_port), 30)
    started = time.monotonic()
    notifications = []

    def next_notification(timeout, expecting):
        try:
            notifications.append(received.get(timeout=timeout))
        except queue.Empty:
            for name, f in logs.items():
                f.seek(0)
                print(f"--- {name} log\n{f.read()}", file=sys.stderr)
            sys.exit(f"the webhook received nothing more in {timeout} s (expected {expecting}); "
                     f"got {[(p, [a['labels'] for a in b['alerts']]) for p, b in notifications]}")
        return notifications[-1]

    def notified(alertname, namespace):
        return [p for p, b in notifications for a in b["alerts"]
                if a["labels"]["alertname"] == alertname and a["labels"].get("namespace") == namespace]

    # P1 group_wait is 10 s.
    path, body = next_notification(60, f"{ALERT} on /pager")
    alerts = body["alerts"]
    assert path == "/pager", f"the first notification went to {path}: {alerts}"
    assert body["receiver"] == "pager" and body["status"] == "firing", body
    assert [a["labels"]["alertname"] for a in alerts] == [ALERT], alerts
    labels, annotations = alerts[0]["labels"], alerts[0]["annotations"]
    assert labels["priority"] == "P1" and labels["namespace"] == NAMESPACE, labels
    assert annotations["runbook_url"].endswith("/docs/operate.md#imageflowdatabasedown"), annotations
    print(f"{ALERT}: exporter -> Prometheus -> Alertmanager -> webhook {path} in "
          f"{time.monotonic() - started:.1f} s, runbook {annotations['runbook_url']}")

    # The symptom: inhibited where its database is down, not where it is up.
    def symptom_states():
        url = f"http://127.0.0.1:{am_port}/api/v2/alerts?filter=alertname%3D%22{SYMPTOM}%22"
        with urllib.request.urlopen(url, timeout=2) as r:
            return {a["labels"]["namespace"]: a["status"]["inhibitedBy"] for a in json.load(r)}

    wait_until(f"{SYMPTOM} in both namespaces in Alertmanager",
               lambda: set(symptom_states()) == {NAMESPACE, OTHER_NAMESPACE}, 30)
    states = symptom_states()
    assert states[NAMESPACE] and not states[OTHER_NAMESPACE], f"inhibitedBy per namespace: {states}"
    # P2 group_wait is 30 s: the uninhibited one is notified, the inhibited one never.
    while not notified(SYMPTOM, OTHER_NAMESPACE):
        next_notification(60, f"{SYMPTOM} of {OTHER_NAMESPACE}")
    time.sleep(2)
    while not received.empty():
        notifications.append(received.get())
    assert not notified(SYMPTOM, NAMESPACE), f"the inhibited {SYMPTOM} was notified: {notifications}"
    # P2 pages in business hours (Mon-Fri 09:00-18:00 UTC, the values' default) and goes
    # to chat outside them; not judged within two minutes of a boundary.
    now = datetime.datetime.now(datetime.timezone.utc)
    minute = now.hour * 60 + now.minute
    if min(abs(minute - 9 * 60), abs(minute - 18 * 60), minute, 24 * 60 - minute) > 2:
        in_hours = now.weekday() < 5 and 9 * 60 <= minute < 18 * 60
        expected = ["/pager"] if in_hours else ["/chat"]
        assert notified(SYMPTOM, OTHER_NAMESPACE) == expected, \
            f"P2 at {now:%a %H:%M} UTC went to {notified(SYMPTOM, OTHER_NAMESPACE)}, expected {expected}"
    print(f"{SYMPTOM}: inhibited by {ALERT} in {NAMESPACE}, notified on {notified(SYMPTOM, OTHER_NAMESPACE)} "
          f"for {OTHER_NAMESPACE} ({time.monotonic() - started:.1f} s)")
finally:
    stop_processes([p for _, p in procs], timeout=10)
    for server in servers:
        server.shutdown()
    subprocess.run(["rm", "-rf", work], check=False)
