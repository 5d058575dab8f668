#!/usr/bin/env python3
"""Static checks of deploy/cluster for scripts/check-deploy (run it, not this).

    check-deploy-cluster.py

Each failure is printed as `FAIL <where>: <what>`:

1. kubeadm: every template in deploy/cluster/kubeadm is rendered by the
   script that uses it (`kubeadm-node render`, sample values) and validated
   against deploy/cluster/kubeadm/kubeadm-v1beta4.schema.json (written from
   kubeadm's Go API types, source in its $comment), strictly; then the
   shape the runbook promises: stacked etcd behind controlPlaneEndpoint,
   Calico's pool = podSubnet, no addon skip in the file, a control-plane
   join and a worker join; `render` refuses malformed values;
2. the Kubernetes manifests of deploy/cluster (Calico Installation,
   StorageClass, storage test) against the Kubernetes schemas and vendored
   CRDs, strictly (as for the overlays), and their promises;
3. the ingress-nginx values: every key exists in the chart's own
   values.yaml (vendored, SOURCES.tsv), and DaemonSet, NodePorts
   30080/30443, proxy protocol, an explicit externalTrafficPolicy.
"""

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import jsonschema
import yaml

ROOT = Path(__file__).resolve().parent.parent
CLUSTER = ROOT / "deploy" / "cluster"
_spec = importlib.util.spec_from_file_location("check_deploy_validate", ROOT / "scripts" / "check-deploy-validate.py")
cdv = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(cdv)
fail = cdv.fail

SAMPLE = {
    "HA_CP_ENDPOINT": "cp.example.com:6443",
    "HA_NODE_IP": "10.0.0.11",
    "HA_K8S_VERSION": "v1.32.4",
    "HA_JOIN_TOKEN": "abcdef.0123456789abcdef",
    "HA_CA_CERT_HASH": "sha256:" + "0123456789abcdef" * 4,
    "HA_CERT_KEY": "fedcba9876543210" * 4,
}


def render(template, **overrides):
    env = {k: v for k, v in os.environ.items() if not k.startswith("HA_")}
    env.update(SAMPLE)
    env.update(overrides)
    return subprocess.run([str(CLUSTER / "kubeadm-node"), "render", str(template)], env=env, capture_output=True, text=True)


# --- 1. kubeadm -----------------------------------------------------------------


def check_kubeadm(pod_cidr):
    schema = json.loads((CLUSTER / "kubeadm" / "kubeadm-v1beta4.schema.json").read_text())
    validator = jsonschema.Draft7Validator(schema, format_checker=jsonschema.Draft7Validator.FORMAT_CHECKER)
    # The schema must be strict, or passing it means little.
    probe = {"apiVersion": "kubeadm.k8s.io/v1beta4", "kind": "ClusterConfiguration", "networking": {"podSubnett": "x"}}
    if validator.is_valid(probe):
        fail("kubeadm schema", "accepts an unknown field (networking.podSubnett)")
    docs = {}
    for t in sorted((CLUSTER / "kubeadm").glob("*.yaml")):
        where = f"deploy/cluster/kubeadm/{t.name}"
        r = render(t)
        if r.returncode != 0:
            fail(where, f"kubeadm-node render failed: {r.stderr.strip()}")
            continue
        for d in yaml.safe_load_all(r.stdout):
            if not d:
                continue
            for e in sorted(validator.iter_errors(d), key=lambda e: list(e.path))[:5]:
                fail(where, f"{d.get('kind')}: {'/'.join(map(str, e.path))}: {e.message}")
            docs.setdefault(t.name, []).append(d)
    kinds = {name: [d.get("kind") for d in ds] for name, ds in docs.items()}
    want = {"init.yaml": ["InitConfiguration", "ClusterConfiguration"], "join-control-plane.yaml": ["JoinConfiguration"], "join-worker.yaml": ["JoinConfiguration"]}
    if kinds != want:
        fail("deploy/cluster/kubeadm", f"expected the documents {want}, found {kinds}")
        return
    init, cluster = docs["init.yaml"]
    if cluster.get("controlPlaneEndpoint") != SAMPLE["HA_CP_ENDPOINT"]:
        fail("init.yaml ClusterConfiguration", "controlPlaneEndpoint must be HA_CP_ENDPOINT")
    if "local" not in cluster.get("etcd", {}):
        fail("init.yaml ClusterConfiguration", "etcd must be local (stacked on the control-plane nodes)")
    if cluster.get("networking", {}).get("podSubnet") != pod_cidr:
        fail("init.yaml ClusterConfiguration", f"podSubnet {cluster.get('networking', {}).get('podSubnet')} != Calico's pool {pod_cidr}")
    if any(p.split("/")[0] == "addon" for p in init.get("skipPhases", [])):
        fail("init.yaml InitConfiguration", "skipPhases must not hold the addon phase: `kubeadm init phase addon all --config` would skip it too")
    if not init.get("certificateKey"):
        fail("init.yaml InitConfiguration", "certificateKey must be set (kubeadm-node shares it with the joining control-plane nodes)")
    cp, worker = docs["join-control-plane.yaml"][0], docs["join-worker.yaml"][0]
    if not cp.get("controlPlane", {}).get("certificateKey"):
        fail("join-control-plane.yaml", "needs controlPlane.certificateKey")
    if "controlPlane" in worker:
        fail("join-worker.yaml", "a worker has no controlPlane section")
    for name, d in (("join-control-plane.yaml", cp), ("join-worker.yaml", worker)):
        bt = d.get("discovery", {}).get("bootstrapToken", {})
        if bt.get("apiServerEndpoint") != SAMPLE["HA_CP_ENDPOINT"] or not bt.get("caCertHashes") or bt.get("unsafeSkipCAVerification"):
            fail(name, "must discover through HA_CP_ENDPOINT with a pinned CA (caCertHashes)")
    # Bad input is refused by the script, with the variable's name.
    for var, bad in (("HA_JOIN_TOKEN", "ABCDEF.0123456789abcdef"), ("HA_CP_ENDPOINT", 'cp"x:6443'), ("HA_CERT_KEY", "00")):
        r = render(CLUSTER / "kubeadm" / "join-control-plane.yaml", **{var: bad})
        if r.returncode == 0 or var not in r.stderr:
            fail("deploy/cluster/kubeadm-node", f"render accepted {var}={bad!r}")
    print(f"  kubeadm: {sum(len(v) for v in docs.values())} documents in {len(docs)} templates, rendered by kubeadm-node")


# --- 2. manifests -----------------------------------------------------------------


def manifest_files():
    return [f for f in sorted(CLUSTER.glob("*.yaml")) if f.name != "ingress-nginx-values.yaml"]


def check_manifests():
    crds = cdv.load_crds()
    docs = []
    for f in manifest_files():
        ds = [d for d in yaml.safe_load_all(f.read_text()) if d]
        cdv.validate_schemas(f"deploy/cluster/{f.name}", ds, crds)
        docs += ds
    by = lambda k: [d for d in docs if d.get("kind") == k]  # noqa: E731
    defaults = [s for s in by("StorageClass") if s["metadata"].get("annotations", {}).get("storageclass.kubernetes.io/is-default-class") == "true"]
    if len(defaults) != 1:
        fail("deploy/cluster", f"exactly one default StorageClass, found {len(defaults)}")
    for s in by("StorageClass"):
        if s.get("reclaimPolicy", "Delete") not in ("Delete", "Retain") or s.get("volumeBindingMode", "Immediate") not in ("Immediate", "WaitForFirstConsumer"):
            fail(f"deploy/cluster StorageClass/{s['metadata']['name']}", "reclaimPolicy must be Delete or Retain, volumeBindingMode Immediate or WaitForFirstConsumer")
    modes = sorted(m for p in by("PersistentVolumeClaim") for m in p["spec"]["accessModes"])
    if modes != ["ReadWriteMany", "ReadWriteOnce"] or any(p["spec"].get("storageClassName") for p in by("PersistentVolumeClaim")):
        fail("deploy/cluster/storage-test.yaml", "needs one RWO and one RWX PVC from the default class (no storageClassName)")
    for p in by("Pod"):
        cdv.check_pod_security(f"deploy/cluster Pod/{p['metadata']['name']}", p["spec"])
        for c in p["spec"]["containers"]:
            if "@sha256:" not in c["image"]:
                fail(f"deploy/cluster Pod/{p['metadata']['name']}", "image must be pinned by digest")
    inst = by("Installation")
    pools = [p["cidr"] for i in inst for p in i["spec"].get("calicoNetwork", {}).get("ipPools", [])]
    if len(inst) != 1 or len(pools) != 1:
        fail("deploy/cluster/calico-installation.yaml", "needs one Installation with one IP pool")
        return None, docs
    print(f"  manifests: {len(docs)} objects in {len(manifest_files())} files")
    return pools[0], docs


# --- 3. ingress-nginx values --------------------------------------------------------

# Kubernetes-typed or free-form maps: the chart passes them through, so their
# keys are not the chart's to define.
PASS_THROUGH = {"resources", "affinity", "nodeSelector", "tolerations", "podSecurityContext", "containerSecurityContext", "updateStrategy", "config"}


def unknown_keys(ours, theirs, path=""):
    out = []
    for k, v in ours.items():
        p = f"{path}.{k}" if path else k
        if not isinstance(theirs, dict) or k not in theirs:
            out.append(p)
        elif isinstance(v, dict) and isinstance(theirs[k], dict) and theirs[k] and k not in PASS_THROUGH:
            out += unknown_keys(v, theirs[k], p)
    return out


def check_ingress_values():
    where = "deploy/cluster/ingress-nginx-values.yaml"
    ours = yaml.safe_load((CLUSTER / "ingress-nginx-values.yaml").read_text())
    chart = sorted((CLUSTER / "vendor").glob("ingress-nginx-*-values.yaml"))
    if len(chart) != 1:
        fail(where, "needs exactly one vendored chart values file in deploy/cluster/vendor")
        return
    theirs = yaml.safe_load(chart[0].read_text())
    for k in unknown_keys(ours, theirs):
        fail(where, f"{k}: not a value of the chart ({chart[0].name})")
    c = ours.get("controller", {})
    svc = c.get("service", {})
    checks = [
        (c.get("kind") == "DaemonSet", "controller.kind must be DaemonSet"),
        (svc.get("type") == "NodePort", "controller.service.type must be NodePort"),
        (svc.get("nodePorts", {}).get("http") == 30080 and svc.get("nodePorts", {}).get("https") == 30443, "NodePorts must be http 30080, https 30443"),
        (c.get("config", {}).get("use-proxy-protocol") == "true", 'controller.config.use-proxy-protocol must be the string "true"'),
        (svc.get("externalTrafficPolicy") in ("Local", "Cluster"), "controller.service.externalTrafficPolicy must be set (Local or Cluster) and explained"),
        (c.get("allowSnippetAnnotations") is False, "controller.allowSnippetAnnotations must be false"),
    ]
    for ok, what in checks:
        if not ok:
            fail(where, what)
    print(f"  ingress-nginx values: keys checked against {chart[0].name}")


def main():
    pod_cidr, _ = check_manifests()
    check_kubeadm(pod_cidr)
    check_ingress_values()
    if cdv.FAILURES:
        print(f"{len(cdv.FAILURES)} failure(s)")
        sys.exit(1)


if __name__ == "__main__":
    main()
