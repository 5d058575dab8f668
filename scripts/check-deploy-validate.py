#!/usr/bin/env python3
"""Static checks of deploy/ for scripts/check-deploy (run it, not this).

    check-deploy-validate.py RENDERED_DIR

RENDERED_DIR holds one `<name>.yaml` per kustomization (`kubectl kustomize`
output). Checks, each failure printed as `FAIL <where>: <what>`:

1. schemas: built-in kinds against the Kubernetes OpenAPI schemas bundled in
   the `kubernetes-validate` package (strict: unknown fields fail); custom
   resources against the openAPIV3Schema of their real CRD, vendored in
   deploy/k8s/crds (SOURCES.tsv says from where), also strict. A kind with
   neither is a failure;
2. the properties deploy/README.md promises (replicas, spreading, probes,
   PDB, HPA, rolling update, grace period, restricted security context,
   service accounts, NetworkPolicies, Ingress, RabbitMQ topology, database
   size, the shared partition count); for the `walkthrough` overlay its own
   promises instead of the pipeline's (check_walkthrough);
3. at most 5 policy-scanner skips in deploy/, each with a justification;
4. the compose file against the Compose Specification's JSON schema, its
   completeness and the files it mounts;
5. the dashboard JSON.
"""

import copy
import json
import re
import sys
from pathlib import Path

import jsonschema
import kubernetes_validate
import yaml

ROOT = Path(__file__).resolve().parent.parent
DEPLOY = ROOT / "deploy"
K8S_VERSION = "1.32.0"
FAILURES = []


def fail(where, what):
    FAILURES.append(f"{where}: {what}")
    print(f"FAIL {where}: {what}")


# --- 1. schemas ---------------------------------------------------------------


def crd_to_jsonschema(node):
    """openAPIV3Schema (structural) -> JSON Schema, strict about unknown fields
    where the API server would prune them."""
    if isinstance(node, list):
        return [crd_to_jsonschema(n) for n in node]
    if not isinstance(node, dict):
        return node
    out = {}
    for k, v in node.items():
        if k in ("properties", "patternProperties"):
            out[k] = {name: crd_to_jsonschema(s) for name, s in v.items()}
        elif k in ("items", "additionalProperties", "not"):
            out[k] = crd_to_jsonschema(v) if isinstance(v, dict) else v
        elif k in ("allOf", "anyOf", "oneOf"):
            out[k] = [crd_to_jsonschema(s) for s in v]
        elif k.startswith("x-kubernetes-") or k in ("nullable", "description", "default", "format", "example"):
            continue
        else:
            out[k] = copy.deepcopy(v)
    if node.get("x-kubernetes-int-or-string"):
        out.pop("type", None)
        out["anyOf"] = [{"type": "integer"}, {"type": "string"}]
    if node.get("nullable") and "type" in out:
        out["type"] = [out["type"], "null"]
    preserve = node.get("x-kubernetes-preserve-unknown-fields")
    if out.get("type") == "object" and "properties" in out and "additionalProperties" not in out and not preserve:
        out["additionalProperties"] = False
    return out


def load_crds():
    crds = {}
    for f in sorted((DEPLOY / "k8s" / "crds").glob("*.yaml")):
        crd = yaml.safe_load(f.read_text())
        group, kind = crd["spec"]["group"], crd["spec"]["names"]["kind"]
        for v in crd["spec"]["versions"]:
            if not v.get("served", True):
                continue
            schema = crd_to_jsonschema(v["schema"]["openAPIV3Schema"])
            # metadata is validated by the API server's own rules, not the CRD's.
            schema.setdefault("properties", {})["metadata"] = {"type": "object"}
            crds[(f"{group}/{v['name']}", kind)] = (schema, f.name)
    return crds


def validate_schemas(name, docs, crds):
    for d in docs:
        where = f"{name} {d.get('kind')}/{d.get('metadata', {}).get('name')}"
        key = (d.get("apiVersion"), d.get("kind"))
        if key in crds:
            schema, source = crds[key]
            errors = sorted(jsonschema.Draft7Validator(schema).iter_errors(d), key=lambda e: list(e.path))
            for e in errors[:5]:
                fail(where, f"against CRD {source}: {'/'.join(map(str, e.path))}: {e.message}")
            continue
        try:
            kubernetes_validate.validate(d, K8S_VERSION, strict=True)
        except kubernetes_validate.SchemaNotFoundError:
            fail(where, f"no schema: neither a Kubernetes {K8S_VERSION} kind nor a vendored CRD (deploy/k8s/crds)")
        except kubernetes_validate.ValidationError as e:
            fail(where, f"Kubernetes {K8S_VERSION} schema: {'/'.join(map(str, e.path))}: {e.message}")


# --- 2. properties -------------------------------------------------------------


def by_kind(docs, kind):
    return [d for d in docs if d.get("kind") == kind]


def selects(selector, labels):
    ml = (selector or {}).get("matchLabels", {})
    return all(labels.get(k) == v for k, v in ml.items()) and not (selector or {}).get("matchExpressions")


def duration_s(text):
    m = re.fullmatch(r"(\d+)(ms|s|m|h)?", text or "")
    if not m:
        return None
    n = int(m.group(1))
    return {"ms": n / 1000, "s": n, "m": 60 * n, "h": 3600 * n, None: n}[m.group(2)]


def check_pod_security(where, spec):
    psc = spec.get("securityContext", {})
    if spec.get("automountServiceAccountToken") is not False:
        fail(where, "pod must set automountServiceAccountToken: false")
    if not spec.get("serviceAccountName") or spec.get("serviceAccountName") == "default":
        fail(where, "pod must run as its own ServiceAccount")
    for c in spec.get("initContainers", []) + spec.get("containers", []):
        sc = c.get("securityContext", {})
        w = f"{where} container {c['name']}"
        if not (sc.get("runAsNonRoot") or psc.get("runAsNonRoot")):
            fail(w, "runAsNonRoot must be true")
        if sc.get("readOnlyRootFilesystem") is not True:
            fail(w, "readOnlyRootFilesystem must be true")
        if sc.get("allowPrivilegeEscalation") is not False:
            fail(w, "allowPrivilegeEscalation must be false")
        if sc.get("capabilities", {}).get("drop") != ["ALL"]:
            fail(w, "capabilities must drop ALL")
        seccomp = (sc.get("seccompProfile") or psc.get("seccompProfile") or {}).get("type")
        if seccomp != "RuntimeDefault":
            fail(w, "seccompProfile must be RuntimeDefault")
        res = c.get("resources", {})
        for kind in ("requests", "limits"):
            for r in ("cpu", "memory"):
                if r not in res.get(kind, {}):
                    fail(w, f"resources.{kind}.{r} missing")


def check_workloads(name, docs):
    """What every rendered kustomization promises, pipeline or walkthrough:
    per Deployment the restricted security context, its own ServiceAccount
    without token, three probes, a Service and an explicit ingress
    NetworkPolicy; per Job the security context; a default-deny policy; nginx
    Ingresses with TLS."""
    sas = {d["metadata"]["name"]: d for d in by_kind(docs, "ServiceAccount")}
    services, netpols = by_kind(docs, "Service"), by_kind(docs, "NetworkPolicy")
    for dep in by_kind(docs, "Deployment"):
        where = f"{name} Deployment/{dep['metadata']['name']}"
        pod = dep["spec"]["template"]["spec"]
        labels = dep["spec"]["template"]["metadata"].get("labels", {})
        check_pod_security(where, pod)
        sa = sas.get(pod.get("serviceAccountName"))
        if not sa or sa.get("automountServiceAccountToken") is not False:
            fail(where, "its ServiceAccount must exist with automountServiceAccountToken: false")
        for c in pod["containers"]:
            for probe in ("readinessProbe", "livenessProbe", "startupProbe"):
                if probe not in c:
                    fail(where, f"container {c['name']} has no {probe}")
        if not any(selects(s["spec"].get("selector") and {"matchLabels": s["spec"]["selector"]}, labels) for s in services):
            fail(where, "no Service selects it")
        if not any(selects(np["spec"]["podSelector"], labels) and "Ingress" in np["spec"].get("policyTypes", []) and np["spec"].get("ingress") for np in netpols):
            fail(where, "no NetworkPolicy allows ingress to it explicitly")
    for job in by_kind(docs, "Job"):
        check_pod_security(f"{name} Job/{job['metadata']['name']}", job["spec"]["template"]["spec"])
    if not any(np["spec"]["podSelector"] == {} and set(np["spec"].get("policyTypes", [])) == {"Ingress", "Egress"} and not np["spec"].get("ingress") and not np["spec"].get("egress") for np in netpols):
        fail(name, "no default-deny NetworkPolicy (podSelector {}, Ingress and Egress, no rules)")
    for ing in by_kind(docs, "Ingress"):
        if ing["spec"].get("ingressClassName") != "nginx" or not ing["spec"].get("tls"):
            fail(f"{name} Ingress/{ing['metadata']['name']}", "must use ingressClassName nginx with TLS")
    if not by_kind(docs, "Ingress"):
        fail(name, "no Ingress")


def check_properties(name, docs):
    check_workloads(name, docs)
    if name == "walkthrough":
        check_walkthrough(name, docs)
    else:
        check_pipeline(name, docs)


def check_pipeline(name, docs):
    pdbs, hpas = by_kind(docs, "PodDisruptionBudget"), by_kind(docs, "HorizontalPodAutoscaler")
    for dep in by_kind(docs, "Deployment"):
        n = dep["metadata"]["name"]
        where = f"{name} Deployment/{n}"
        spec, pod = dep["spec"], dep["spec"]["template"]["spec"]
        labels = dep["spec"]["template"]["metadata"].get("labels", {})
        if labels.get("app.kubernetes.io/component") == "demo":
            continue  # the demo's single data-generator (two would duplicate device ids)
        if spec.get("replicas", 1) < 2:
            fail(where, "replicas must be >= 2")
        if spec.get("strategy", {}).get("rollingUpdate", {}).get("maxUnavailable") != 0:
            fail(where, "rolling update must have maxUnavailable: 0")
        anti = pod.get("affinity", {}).get("podAntiAffinity", {}).get("preferredDuringSchedulingIgnoredDuringExecution", [])
        if not any(t["podAffinityTerm"]["topologyKey"] == "kubernetes.io/hostname" for t in anti):
            fail(where, "needs preferred pod anti-affinity on kubernetes.io/hostname")
        if not pod.get("topologySpreadConstraints"):
            fail(where, "needs topologySpreadConstraints")
        drain = max((duration_s(e.get("value")) or 0 for c in pod["containers"] for e in c.get("env", []) if e["name"] == "HA_DRAIN_TIMEOUT"), default=20)
        pre_stop = max((c.get("lifecycle", {}).get("preStop", {}).get("sleep", {}).get("seconds", 0) for c in pod["containers"]), default=0)
        if pod.get("terminationGracePeriodSeconds", 30) <= drain + pre_stop + 1:
            fail(where, f"terminationGracePeriodSeconds must exceed preStop ({pre_stop}s) + 1s + drain ({drain}s)")
        if not any(selects(p["spec"]["selector"], labels) for p in pdbs):
            fail(where, "no PodDisruptionBudget selects it")
        hpa = [h for h in hpas if h["spec"]["scaleTargetRef"]["name"] == n and h["spec"]["scaleTargetRef"]["kind"] == "Deployment"]
        if not hpa or hpa[0]["spec"].get("minReplicas", 1) < 2:
            fail(where, "needs a HorizontalPodAutoscaler with minReplicas >= 2")
    # One partition count, read by ingest and analyzer from the same ConfigMap key.
    cms = {d["metadata"]["name"]: d for d in by_kind(docs, "ConfigMap")}
    readers = set()
    for dep in by_kind(docs, "Deployment"):
        for c in dep["spec"]["template"]["spec"]["containers"]:
            for e in c.get("env", []):
                if e["name"] == "HA_PARTITIONS":
                    ref = e.get("valueFrom", {}).get("configMapKeyRef")
                    if not ref or ref["name"] not in cms or ref["key"] not in cms[ref["name"]].get("data", {}):
                        fail(f"{name} Deployment/{dep['metadata']['name']}", "HA_PARTITIONS must come from a ConfigMap key that exists")
                    else:
                        readers.add((dep["metadata"]["name"], ref["name"], ref["key"]))
    if {r[0] for r in readers} != {"ingest-api", "analyzer"} or len({r[1:] for r in readers}) != 1:
        fail(name, f"ingest-api and analyzer must read HA_PARTITIONS from one ConfigMap key, found {sorted(readers)}")
    # RabbitMQ: 3 nodes, the policy of docs/queue-and-store.md, no partition Queue objects.
    rmq = by_kind(docs, "RabbitmqCluster")
    if len(rmq) != 1 or rmq[0]["spec"].get("replicas") != 3:
        fail(name, "needs one RabbitmqCluster with replicas: 3")
    want = {"delivery-limit": 20, "dead-letter-exchange": "ha.dlx", "dead-letter-strategy": "at-least-once", "overflow": "reject-publish"}
    pol = [p for p in by_kind(docs, "Policy") if p["spec"]["name"] == "ha-readings"]
    if not pol or pol[0]["spec"]["definition"] != want or pol[0]["spec"]["pattern"] != r"\.readings\.[0-9]+$" or pol[0]["spec"].get("applyTo") != "queues":
        fail(name, "Policy ha-readings must be exactly the one in docs/queue-and-store.md")
    for q in by_kind(docs, "Queue"):
        if re.fullmatch(r"ha\.readings\.\d+", q["spec"]["name"]):
            fail(name, f"Queue {q['spec']['name']}: the applications declare the partition queues (a second declaration risks 406)")
    if not any(q["spec"]["name"] == "ha.dead" for q in by_kind(docs, "Queue")) or not any(e["spec"]["name"] == "ha.dlx" and e["spec"].get("type") == "topic" for e in by_kind(docs, "Exchange")):
        fail(name, "needs the dead-letter exchange ha.dlx (topic) and queue ha.dead")
    # Encrypted backends (docs/queue-and-store.md#tls): no insecure
    # CockroachDB, and no service URL that skips TLS.
    for c in by_kind(docs, "CrdbCluster"):
        if c["spec"].get("tlsEnabled") is not True:
            fail(name, f"CrdbCluster/{c['metadata']['name']} must run secure (tlsEnabled: true)")
    for w in by_kind(docs, "Deployment") + by_kind(docs, "Job"):
        for c in w["spec"]["template"]["spec"]["containers"]:
            for e in c.get("env", []):
                v = str(e.get("value", ""))
                if (e["name"] == "HA_AMQP_URL" and not v.startswith("amqps://")) or (
                    e["name"] == "HA_POSTGRES_URL" and "value" in e and "sslmode=verify-full" not in v
                ):
                    fail(f"{name} {w['kind']}/{w['metadata']['name']}", f"{e['name']} must use TLS (amqps://, sslmode=verify-full)")
    if name != "base":
        dbs = [d for d in by_kind(docs, "Cluster") if d["spec"].get("instances") == 3] + [d for d in by_kind(docs, "CrdbCluster") if d["spec"].get("nodes") == 3]
        if len(dbs) != 1:
            fail(name, "needs exactly one 3-instance database (CloudNativePG Cluster or CrdbCluster)")


MIB = 1 << 20


def quantity_bytes(text):
    """A Kubernetes memory quantity ("128Mi", "1G", "512") in bytes, or None."""
    m = re.fullmatch(r"(\d+)(Ki|Mi|Gi|Ti|k|M|G|T)?", str(text or ""))
    if not m:
        return None
    mult = {None: 1, "Ki": 1 << 10, "Mi": MIB, "Gi": 1 << 30, "Ti": 1 << 40, "k": 10**3, "M": 10**6, "G": 10**9, "T": 10**12}
    return int(m.group(1)) * mult[m.group(2)]


def env_of(container):
    return {e["name"]: e.get("value") for e in container.get("env", [])}


def check_walkthrough(name, docs):
    """The walkthrough's promises (deploy/README.md, step 4): hello with 2
    replicas on different nodes, a Service, the Ingress and a ReadWriteMany
    PVC mounted where it writes its log; cpu-stresser under an HPA on CPU
    (with a CPU request, no fixed replicas); ram-hogger asked to hold more
    than its memory limit, with the note of what to observe; each runs its
    own binary of the pipeline's image, in a namespace enforcing the
    restricted Pod Security Standard."""
    deps = {d["metadata"]["name"]: d for d in by_kind(docs, "Deployment")}
    if set(deps) != {"hello", "cpu-stresser", "ram-hogger"}:
        fail(name, f"Deployments must be hello, cpu-stresser and ram-hogger, found {sorted(deps)}")
    for n, dep in deps.items():
        for c in dep["spec"]["template"]["spec"]["containers"]:
            if c.get("command", [None])[0] != f"/usr/local/bin/{n}":
                fail(f"{name} Deployment/{n}", f"must run /usr/local/bin/{n} (the binary of that name in the pipeline's image)")
    ns = by_kind(docs, "Namespace")
    if len(ns) != 1 or ns[0]["metadata"].get("labels", {}).get("pod-security.kubernetes.io/enforce") != "restricted":
        fail(name, "needs its own Namespace enforcing Pod Security restricted")
    if "hello" in deps:
        where = f"{name} Deployment/hello"
        dep = deps["hello"]
        pod = dep["spec"]["template"]["spec"]
        if dep["spec"].get("replicas") != 2:
            fail(where, "replicas must be 2")
        if dep["spec"].get("strategy", {}).get("rollingUpdate", {}).get("maxUnavailable") != 0:
            fail(where, "rolling update must have maxUnavailable: 0")
        anti = pod.get("affinity", {}).get("podAntiAffinity", {})
        terms = anti.get("requiredDuringSchedulingIgnoredDuringExecution", []) + [t["podAffinityTerm"] for t in anti.get("preferredDuringSchedulingIgnoredDuringExecution", [])]
        if not any(t["topologyKey"] == "kubernetes.io/hostname" and selects(t.get("labelSelector"), dep["spec"]["template"]["metadata"]["labels"]) for t in terms):
            fail(where, "needs pod anti-affinity on kubernetes.io/hostname against its own pods")
        c = pod["containers"][0]
        log_dir = (env_of(c).get("HA_LOG_FILE") or "").rsplit("/", 1)[0]
        mounts = {m["name"]: m for m in c.get("volumeMounts", [])}
        claims = {v["name"]: v["persistentVolumeClaim"]["claimName"] for v in pod.get("volumes", []) if "persistentVolumeClaim" in v}
        pvcs = {d["metadata"]["name"]: d for d in by_kind(docs, "PersistentVolumeClaim")}
        mounted = [claims[v] for v, m in mounts.items() if v in claims and m["mountPath"] == log_dir]
        if not log_dir or not mounted:
            fail(where, "HA_LOG_FILE's directory must be a PersistentVolumeClaim mount")
        elif mounted[0] not in pvcs or "ReadWriteMany" not in pvcs[mounted[0]]["spec"].get("accessModes", []):
            fail(where, f"PVC {mounted[0]} must exist and be ReadWriteMany (two replicas on two nodes write to it)")
        drain = duration_s(env_of(c).get("HA_DRAIN_TIMEOUT")) or 20
        pre_stop = c.get("lifecycle", {}).get("preStop", {}).get("sleep", {}).get("seconds", 0)
        if pod.get("terminationGracePeriodSeconds", 30) <= drain + pre_stop:
            fail(where, f"terminationGracePeriodSeconds must exceed preStop ({pre_stop}s) + drain ({drain}s)")
        backends = [p["backend"]["service"]["name"] for i in by_kind(docs, "Ingress") for r in i["spec"].get("rules", []) for p in r.get("http", {}).get("paths", [])]
        if "hello" not in backends:
            fail(where, "no Ingress routes to Service hello")
    if "cpu-stresser" in deps:
        where = f"{name} Deployment/cpu-stresser"
        dep = deps["cpu-stresser"]
        hpa = [h for h in by_kind(docs, "HorizontalPodAutoscaler") if h["spec"]["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment", "name": "cpu-stresser"}]
        if not hpa or not any(m.get("type") == "Resource" and m["resource"]["name"] == "cpu" and m["resource"]["target"].get("type") == "Utilization" and m["resource"]["target"].get("averageUtilization") for m in hpa[0]["spec"].get("metrics", [])):
            fail(where, "needs an HPA on CPU utilization")
        elif hpa[0]["spec"]["maxReplicas"] <= hpa[0]["spec"].get("minReplicas", 1):
            fail(where, "its HPA must be able to scale out (maxReplicas > minReplicas)")
        if "replicas" in dep["spec"]:
            fail(where, "must not set replicas: the HPA owns it (an apply would reset it)")
        if not dep["spec"]["template"]["spec"]["containers"][0].get("resources", {}).get("requests", {}).get("cpu"):
            fail(where, "needs a CPU request (the HPA's utilization is relative to it)")
    if "ram-hogger" in deps:
        where = f"{name} Deployment/ram-hogger"
        dep = deps["ram-hogger"]
        c = dep["spec"]["template"]["spec"]["containers"][0]
        limit = quantity_bytes(c.get("resources", {}).get("limits", {}).get("memory"))
        want = env_of(c).get("HA_MEGABYTES")
        if limit is None or not (want or "").isdigit() or int(want) * MIB <= limit:
            fail(where, "HA_MEGABYTES must exceed the memory limit (the OOM kill is the lesson)")
        if len(dep["metadata"].get("annotations", {}).get("walkthrough/observe", "")) < 40:
            fail(where, "needs the annotation walkthrough/observe saying what to watch")


def images(docs):
    return {c["image"] for d in by_kind(docs, "Deployment") + by_kind(docs, "Job") for c in d["spec"]["template"]["spec"]["containers"]}


def check_same_image(rendered):
    """The walkthrough runs from the pipeline's one image (deploy/README.md)."""
    load = lambda n: [d for d in yaml.safe_load_all((rendered / f"{n}.yaml").read_text()) if d]  # noqa: E731
    if (rendered / "walkthrough.yaml").exists() and (rendered / "base.yaml").exists():
        walk, base = images(load("walkthrough")), images(load("base"))
        if walk != base:
            fail("walkthrough", f"must use the pipeline's image {sorted(base)}, uses {sorted(walk)}")


# --- 3. policy-scanner skips ---------------------------------------------------


def check_skips():
    """Every skip declaration in deploy/: a `checkov.io/skipN: CKV_X=why`
    annotation, the same added by a JSON patch (`path: .../checkov.io~1skipN`
    then `value: CKV_X=why`), or a Dockerfile `# checkov:skip=CKV_X: why`."""
    patterns = [
        re.compile(r"checkov\.io/skip\d+:\s*\"?(CKV\w+)=(.*?)\"?$", re.M),
        re.compile(r"checkov\.io~1skip\d+\n(?:\s*#.*\n)*\s*value:\s*(CKV\w+)=(.*)$", re.M),
        re.compile(r"checkov:skip=(CKV\w+):?(.*)$", re.M),
    ]
    skips = []
    for f in sorted(DEPLOY.rglob("*")):
        if not f.is_file() or "crds" in f.parts or "secrets" in f.parts or f.suffix == ".json":
            continue
        text = f.read_text(errors="replace")
        for pat in patterns:
            for m in pat.finditer(text):
                line = text[: m.start()].count("\n") + 1
                skips.append((str(f.relative_to(ROOT)), line, m.group(1), m.group(2).strip()))
    for path, line, check, why in skips:
        print(f"  skip {check} at {path}:{line}: {why}")
        if len(why) < 20:
            fail(f"{path}:{line}", f"skip of {check} needs a one-line justification")
    if len(skips) > 5:
        fail("deploy/", f"{len(skips)} policy-scanner skips; at most 5 are allowed")
    return len(skips)


# --- 4. compose ----------------------------------------------------------------


def check_compose():
    path = DEPLOY / "compose.yaml"
    try:
        doc = yaml.safe_load(path.read_text())
    except Exception as e:  # noqa: BLE001 - any parse error is the failure
        fail("deploy/compose.yaml", f"does not parse: {e}")
        return
    # The Compose Specification's own JSON schema (what docker compose
    # embeds), vendored in deploy/compose/schema (SOURCES.tsv).
    schema = json.loads((DEPLOY / "compose" / "schema" / "compose-spec.json").read_text())
    for e in sorted(jsonschema.Draft7Validator(schema).iter_errors(doc), key=lambda e: list(e.path))[:10]:
        fail("deploy/compose.yaml", f"compose-spec schema: {'/'.join(map(str, e.path))}: {e.message}")
    services = doc.get("services") or {}
    need = ["rabbitmq", "postgres", "migrate", "ingest-1", "ingest-2", "nginx", "analyzer-1", "analyzer-2", "alerts-api", "data-generator", "prometheus", "grafana"]
    for s in need:
        if s not in services:
            fail("deploy/compose.yaml", f"service {s} missing")
    for n, s in services.items():
        where = f"deploy/compose.yaml service {n}"
        if "image" not in s and "build" not in s:
            fail(where, "needs image or build")
        img = s.get("image", "")
        if img and not img.startswith("${") and (":" not in img.split("/")[-1] or img.endswith(":latest")):
            fail(where, f"image {img} must be pinned to a version tag")
        deps = s.get("depends_on") or {}
        for d in deps:
            if d not in services:
                fail(where, f"depends_on unknown service {d}")
        for v in s.get("volumes", []):
            src = v.split(":")[0] if isinstance(v, str) else v.get("source", "")
            if src.startswith(".") and not (path.parent / src).exists():
                fail(where, f"mounts {src}, which does not exist")
        for k in ("configs", "secrets"):
            for ref in s.get(k, []):
                ref_name = ref if isinstance(ref, str) else ref.get("source")
                if ref_name not in (doc.get(k) or {}):
                    fail(where, f"{k[:-1]} {ref_name} is not defined")
    for k in ("configs", "secrets"):
        for n, c in (doc.get(k) or {}).items():
            f = c.get("file")
            if f and not (path.parent / f).exists() and "secrets" not in Path(f).parts:
                fail(f"deploy/compose.yaml {k[:-1]} {n}", f"file {f} does not exist")


# --- 5. dashboard ----------------------------------------------------------------


def check_dashboard():
    for f in sorted(DEPLOY.rglob("*.json")):
        try:
            d = json.loads(f.read_text())
        except ValueError as e:
            fail(str(f.relative_to(ROOT)), f"invalid JSON: {e}")
            continue
        if "panels" in d:
            for p in d["panels"]:
                if p.get("type") != "row" and not any(t.get("expr") for t in p.get("targets", [])):
                    fail(str(f.relative_to(ROOT)), f"panel {p.get('title')!r} has no query")


def main():
    rendered = Path(sys.argv[1])
    crds = load_crds()
    for f in sorted(rendered.glob("*.yaml")):
        docs = [d for d in yaml.safe_load_all(f.read_text()) if d]
        before = len(FAILURES)
        validate_schemas(f.stem, docs, crds)
        check_properties(f.stem, docs)
        print(f"  {f.stem}: {len(docs)} objects, {'ok' if len(FAILURES) == before else 'FAILED'}")
    check_same_image(rendered)
    n = check_skips()
    print(f"  policy-scanner skips: {n}")
    check_compose()
    check_dashboard()
    if FAILURES:
        print(f"{len(FAILURES)} failure(s)")
        sys.exit(1)


if __name__ == "__main__":
    main()
