#!/usr/bin/env python3
"""The Fluent Bit configurations of deploy/, for scripts/check-deploy (run it,
not this).

    check-deploy-fluentbit.py RENDERED_DIR

1. the parser's own tests (scripts/fluentbit_conf_test.py);
2. the `logging` overlay (RENDERED_DIR/logging.yaml): the configuration in
   ConfigMap fluent-bit-config parsed and checked against the schema
   (scripts/fluentbit_conf.py) with the files and environment the DaemonSet
   really gives it: its ConfigMap keys where they are mounted, the Secret
   elasticsearch-credentials' credentials.conf (ES_USER, ES_PASSWORD, as
   deploy/README.md says), its env; then that the paths it names are where
   the pod has them (state on a writable volume, logs on the hostPath, the
   API token projected), the probes hit its HTTP port, and the ECS parser
   reads the services' @timestamp;
3. the compose profile `logging`: deploy/compose/fluent-bit against the same
   schema with the files compose.yaml mounts, its Elasticsearch host a
   service of the profile, and its filter keeping exactly the app services.

Each failure is printed as `FAIL <where>: <what>`.
"""

import re
import subprocess
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "scripts"))
import fluentbit_conf as fb  # noqa: E402

FAILURES = []
# What --log-format ecs writes (reference-apps/src/service/ecs.rs).
ECS_TIMESTAMP = "2026-11-27T04:05:06.789Z"
# deploy/README.md: the Secret elasticsearch-credentials' credentials.conf.
CREDENTIALS = "@SET ES_USER=fluent-bit\n@SET ES_PASSWORD=stand-in\n"


def fail(where, what):
    FAILURES.append(f"{where}: {what}")
    print(f"FAIL {where}: {what}")


def under(path, mounts):
    """The mount (path -> info) holding `path`, if any."""
    best = None
    for m in mounts:
        if path == m or path.startswith(m.rstrip("/") + "/"):
            if best is None or len(m) > len(best):
                best = m
    return best


def check_paths(where, text, files, env, mounts, writable):
    sections, _ = fb.parse(text, where, files, env)
    for s in sections:
        for key in ("db", "storage.path"):
            p = s.get(key)
            if p and under(p, writable) is None:
                fail(where, f"{s.name} {key} {p} is not on a writable volume ({sorted(writable)})")
        if s.name == "INPUT":
            for p in (s.get("path") or "").split(","):
                if under(p.strip(), mounts) is None:
                    fail(where, f"tail Path {p.strip()} is not mounted")
        for key in ("kube_ca_file", "kube_token_file", "tls.ca_file"):
            p = s.get(key)
            if p and p not in files and under(p, mounts) is None:
                fail(where, f"{key} {p} is not mounted")
    parsers = fb.parsers_of(text, where, files, env)
    ecs = parsers.get("ecs_json")
    if ecs is None or ecs.get("time_key") != "@timestamp" or not fb.parses_time(ecs, ECS_TIMESTAMP):
        fail(where, f"parser ecs_json must read @timestamp as the services write it ({ECS_TIMESTAMP})")
    return sections


def check_overlay(rendered):
    path = rendered / "logging.yaml"
    if not path.exists():
        fail("logging", f"{path} was not rendered")
        return
    docs = [d for d in yaml.safe_load_all(path.read_text()) if d]
    where = "overlays/logging"
    ds = [d for d in docs if d["kind"] == "DaemonSet" and d["metadata"]["name"] == "fluent-bit"]
    if len(ds) != 1:
        fail(where, "needs one DaemonSet fluent-bit")
        return
    pod = ds[0]["spec"]["template"]["spec"]
    if not any(t.get("operator") == "Exists" and "key" not in t for t in pod.get("tolerations", [])):
        fail(where, "the DaemonSet must tolerate every taint (logs of every node)")
    c = pod["containers"][0]
    volumes = {v["name"]: v for v in pod.get("volumes", [])}
    cms = {d["metadata"]["name"]: d for d in docs if d["kind"] == "ConfigMap"}
    files, mounts, writable = {}, {}, set()
    for m in c.get("volumeMounts", []):
        v = volumes.get(m["name"], {})
        mounts[m["mountPath"]] = v
        if not m.get("readOnly") and "emptyDir" in v:
            writable.add(m["mountPath"])
        if "configMap" in v:
            cm = cms.get(v["configMap"]["name"])
            for k, text in (cm or {}).get("data", {}).items():
                files[f"{m['mountPath']}/{k}"] = text
        if v.get("secret", {}).get("secretName") == "elasticsearch-credentials":
            files[f"{m['mountPath']}/credentials.conf"] = CREDENTIALS
        if "projected" in v:
            for src in v["projected"]["sources"]:
                if "serviceAccountToken" in src:
                    files[f"{m['mountPath']}/{src['serviceAccountToken']['path']}"] = ""
                for item in src.get("configMap", {}).get("items", []):
                    files[f"{m['mountPath']}/{item['path']}"] = ""
    argv = c.get("command", []) + c.get("args", [])
    if argv[:1] != ["/fluent-bit/bin/fluent-bit"]:
        fail(where, "the container must run /fluent-bit/bin/fluent-bit (command)")
    config = next((a.split("=", 1)[1] for a in argv if a.startswith("--config=")), None)
    if config not in files:
        fail(where, f"--config={config} is not a mounted ConfigMap key")
        return
    env = {}
    for e in c.get("env", []):
        ref = e.get("valueFrom", {}).get("configMapKeyRef")
        value = cms.get(ref["name"], {}).get("data", {}).get(ref["key"]) if ref else e.get("value")
        if value is None:
            fail(where, f"env {e['name']} has no value in the rendered manifests")
        env[e["name"]] = value or ""
    for e in fb.check(files[config], config, files, env):
        fail(where, e)
    if any(f.startswith(where) for f in FAILURES):
        return
    sections = check_paths(where, files[config], files, env, mounts, writable)
    service = next(s for s in sections if s.name == "SERVICE")
    port = {p["name"]: p["containerPort"] for p in c.get("ports", [])}
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        target = c.get(probe, {}).get("httpGet", {}).get("port")
        if port.get(target, target) != int(service.get("http_port", "2020")):
            fail(where, f"{probe} does not hit HTTP_Port {service.get('http_port')}")
    if not any("hostPath" in v and v["hostPath"]["path"] == "/var/log" for v in mounts.values()):
        fail(where, "the node's /var/log must be a hostPath mount")
    roles = [d for d in docs if d["kind"] == "ClusterRole" and d["metadata"]["name"] == "ha-fluent-bit"]
    needs = {("", "pods"), ("", "namespaces")}
    granted = {(g, r) for role in roles for rule in role["rules"] for g in rule["apiGroups"] for r in rule["resources"]
               if {"get", "list", "watch"} <= set(rule["verbs"])}
    if not needs <= granted:
        fail(where, "ClusterRole ha-fluent-bit must grant get/list/watch on pods and namespaces")
    if not any(d["kind"] == "ClusterRoleBinding" and d["roleRef"]["name"] == "ha-fluent-bit"
               and any(s["name"] == pod.get("serviceAccountName") for s in d["subjects"]) for d in docs):
        fail(where, "ClusterRole ha-fluent-bit must be bound to the DaemonSet's ServiceAccount")
    log_format = {d["data"].get("log-format") for d in docs if d["kind"] == "ConfigMap"
                  and d["metadata"]["name"].startswith("ha-pipeline-") and "log-format" in d.get("data", {})}
    if log_format != {"ecs"}:
        fail(where, f"the services must log in ecs (ConfigMap ha-pipeline log-format), found {log_format}")
    print(f"  {where}: {config} and its parsers valid; {len(sections)} sections")


def check_compose():
    where = "deploy/compose.yaml profile logging"
    doc = yaml.safe_load((ROOT / "deploy" / "compose.yaml").read_text())
    services = doc.get("services", {})
    fbs = services.get("fluent-bit")
    if not fbs or "logging" not in fbs.get("profiles", []):
        fail(where, "needs a service fluent-bit in profile logging")
        return
    for s in ("elasticsearch", "kibana"):
        if "logging" not in services.get(s, {}).get("profiles", []):
            fail(where, f"needs {s} in profile logging")
    image = services.get("elasticsearch", {}).get("image", "") + services.get("kibana", {}).get("image", "")
    if len(re.findall(r":8\.\d+\.\d+", image)) != 2:
        fail(where, "Elasticsearch and Kibana must be pinned 8.x versions")
    files, mounts, writable = {}, {}, set()
    for v in fbs.get("volumes", []):
        src, dst = v.split(":")[:2]
        mounts[dst] = src
        if src.startswith("."):
            host = ROOT / "deploy" / src
            if host.is_file():
                files[dst] = host.read_text()
        elif not src.startswith("/") and not v.endswith(":ro"):
            writable.add(dst)
    argv = fbs.get("entrypoint", []) + fbs.get("command", [])
    if argv[:1] != ["/fluent-bit/bin/fluent-bit"]:
        fail(where, "fluent-bit must run /fluent-bit/bin/fluent-bit (entrypoint)")
    config = next((a.split("=", 1)[1] for a in argv if a.startswith("--config=")), None)
    if config not in files:
        fail(where, f"--config={config} is not a mounted file")
        return
    for e in fb.check(files[config], config, files, {}):
        fail(where, e)
    if any(f.startswith(where) for f in FAILURES):
        return
    sections = check_paths(where, files[config], files, {}, mounts, writable)
    out = next(s for s in sections if s.name == "OUTPUT")
    if out.get("host") not in services or "logging" not in services[out.get("host")].get("profiles", []):
        fail(where, f"es Host {out.get('host')} is not the profile's Elasticsearch service")
    grep = [s for s in sections if s.name == "FILTER" and s.get("name") == "grep"]
    apps = {n for n, s in services.items()
            if "com.docker.compose.service" in s.get("logging", {}).get("options", {}).get("labels", "")}
    if not apps or not grep:
        fail(where, "the app services must label their logs and Fluent Bit must keep only those")
        return
    key, _, rx = grep[0].get("regex").partition(" ")
    if key != "$attrs['com.docker.compose.service']":
        fail(where, f"grep must select on the compose service label, not {key}")
    kept = {n for n in services if re.search(rx.strip(), n)}
    if kept != apps:
        fail(where, f"grep keeps {sorted(kept)}, the labelled app services are {sorted(apps)}")
    for n in apps:
        if n != "migrate" and "HA_LOG_FORMAT" not in str(services[n].get("environment", "")):
            fail(where, f"service {n} must take HA_LOG_FORMAT (ecs for this profile)")
    print(f"  {where}: {config} and its parsers valid; keeps {len(apps)} app services")


def main():
    tests = subprocess.run([sys.executable, str(ROOT / "scripts" / "fluentbit_conf_test.py")],
                           capture_output=True, text=True)
    if tests.returncode != 0:
        print(tests.stderr)
        fail("scripts/fluentbit_conf_test.py", "the parser's tests failed")
    else:
        print(f"  parser tests: {tests.stderr.strip().splitlines()[-1]}")
    check_overlay(Path(sys.argv[1]))
    check_compose()
    if FAILURES:
        print(f"{len(FAILURES)} failure(s)")
        sys.exit(1)


if __name__ == "__main__":
    main()
