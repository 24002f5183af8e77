#!/usr/bin/python3
"""Checks kustomize's rendering of a shoal overlay without a cluster.

No Kubernetes JSON-schema validator is packaged for Debian or usable
offline, so this checks what a schema would and, more usefully, what makes
a shoal deployment work: every object has its kind's required fields; every
ConfigMap, Secret and Deployment that something names exists; Services,
disruption budgets and the autoscaler select pods or targets that exist;
probes ask /healthz and /readyz on the metrics port; pods run as non-root;
the grace period outlasts the drain; and the environment's shape (which
pools, budgets and autoscalers it has). Exits 1 with one line per problem.

usage: check_manifests.py RENDERED.yaml ENVIRONMENT
"""
import re
import sys

import yaml

REQUIRED = {
    "Deployment": ["metadata.name", "spec.selector.matchLabels", "spec.template.metadata.labels",
                   "spec.template.spec.containers"],
    "Service": ["metadata.name", "spec.selector", "spec.ports"],
    "ConfigMap": ["metadata.name", "data"],
    "Secret": ["metadata.name", "data"],
    "PodDisruptionBudget": ["metadata.name", "spec.selector.matchLabels"],
    "HorizontalPodAutoscaler": ["metadata.name", "spec.scaleTargetRef.name", "spec.maxReplicas",
                                "spec.metrics"],
    "PersistentVolumeClaim": ["metadata.name", "spec.accessModes",
                              "spec.resources.requests.storage"],
}
API = {"Deployment": "apps/v1", "Service": "v1", "ConfigMap": "v1", "Secret": "v1",
       "PodDisruptionBudget": "policy/v1", "HorizontalPodAutoscaler": "autoscaling/v2",
       "PersistentVolumeClaim": "v1"}
# What each environment must and must not have.
SHAPE = {
    "dev": {"pools": {"on-demand"}, "pdb": False, "hpa": False, "gpu": False},
    "staging": {"pools": {"on-demand", "spot"}, "pdb": True, "hpa": True, "gpu": True},
    "production": {"pools": {"on-demand", "spot"}, "pdb": True, "hpa": True, "gpu": True},
}

problems = []


def problem(obj, what):
    problems.append(f"{obj.get('kind')}/{obj.get('metadata', {}).get('name')}: {what}")


def get(obj, path):
    for part in path.split("."):
        if not isinstance(obj, dict) or part not in obj:
            return None
        obj = obj[part]
    return obj


def matches(selector, labels):
    return all(labels.get(k) == v for k, v in selector.items())


def check_required(obj):
    kind = obj.get("kind")
    if kind not in REQUIRED:
        problem(obj, "unexpected kind")
        return
    if obj.get("apiVersion") != API[kind]:
        problem(obj, f"apiVersion {obj.get('apiVersion')}, expected {API[kind]}")
    for path in REQUIRED[kind]:
        if get(obj, path) in (None, [], {}):
            problem(obj, f"{path} missing or empty")
    name = get(obj, "metadata.name") or ""
    if not re.fullmatch(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?", name) or len(name) > 63:
        problem(obj, "name is not a DNS label")


def check_pod(obj, by_kind, drain_grace_ms):
    spec = get(obj, "spec.template.spec") or {}
    labels = get(obj, "spec.template.metadata.labels") or {}
    if not matches(get(obj, "spec.selector.matchLabels") or {}, labels):
        problem(obj, "selector does not match the pod template's labels")
    sec = spec.get("securityContext", {})
    if not sec.get("runAsNonRoot") or not sec.get("runAsUser"):
        problem(obj, "pods must run as a non-root user")
    grace = spec.get("terminationGracePeriodSeconds", 30)
    for c in spec.get("containers", []):
        if not c.get("image"):
            problem(obj, f"container {c.get('name')} has no image")
        ports = {p["name"]: p["containerPort"] for p in c.get("ports", [])}
        for probe, path in (("startupProbe", "/healthz"), ("livenessProbe", "/healthz"),
                            ("readinessProbe", "/readyz")):
            get_ = get(c, f"{probe}.httpGet") or {}
            if get_.get("path") != path or get_.get("port") not in ports:
                problem(obj, f"{probe} must GET {path} on a named container port")
        stop = get(c, "lifecycle.preStop.exec.command") or []
        sleep = int(stop[1]) if len(stop) == 2 and stop[0].endswith("sleep") else 0
        if grace * 1000 <= drain_grace_ms + sleep * 1000:
            problem(obj, f"terminationGracePeriodSeconds {grace} does not outlast the preStop "
                         f"sleep ({sleep} s) plus runtime.drain_grace_ms ({drain_grace_ms} ms)")
        if not get(c, "resources.requests"):
            problem(obj, f"container {c.get('name')} has no resource requests")
        # The head's /sd hands Prometheus each node's http.listen as its
        # target: a wildcard (the config's 0.0.0.0) is unreachable, so every
        # shoald pod must listen on (and so advertise) its pod IP.
        if c.get("name") == "shoald":
            env = {e["name"]: e for e in c.get("env", [])}
            listen = env.get("SHOAL_HTTP_LISTEN", {}).get("value", "")
            pod_ip = get(env.get("POD_IP", {}), "valueFrom.fieldRef.fieldPath")
            if listen != "$(POD_IP):9310" or pod_ip != "status.podIP":
                problem(obj, "shoald must get SHOAL_HTTP_LISTEN=$(POD_IP):9310 "
                             "(POD_IP from status.podIP) so /sd advertises a "
                             "reachable metrics target")
            # The namespace label of /sd, which the autoscaling queries select.
            ns = get(env.get("POD_NAMESPACE", {}), "valueFrom.fieldRef.fieldPath")
            if ns != "metadata.namespace":
                problem(obj, "shoald must get POD_NAMESPACE from metadata.namespace "
                             "(the namespace label of /sd's targets)")
    volumes = {v["name"] for v in spec.get("volumes", [])}
    for c in spec.get("initContainers", []) + spec.get("containers", []):
        for m in c.get("volumeMounts", []):
            if m["name"] not in volumes:
                problem(obj, f"container {c.get('name')} mounts {m['name']}, no such volume")
    for v in spec.get("volumes", []):
        if "configMap" in v and v["configMap"]["name"] not in by_kind["ConfigMap"]:
            problem(obj, f"volume {v['name']}: no ConfigMap {v['configMap']['name']}")
        if "secret" in v and v["secret"]["secretName"] not in by_kind["Secret"]:
            problem(obj, f"volume {v['name']}: no Secret {v['secret']['secretName']}")
        claim = get(v, "persistentVolumeClaim.claimName")
        if claim is not None:
            if claim not in by_kind["PersistentVolumeClaim"]:
                problem(obj, f"volume {v['name']}: no PersistentVolumeClaim {claim}")
            # A second pod on a ReadWriteOnce claim waits forever, and two
            # heads must never share a job store.
            if get(obj, "spec.strategy.type") != "Recreate" or get(obj, "spec.replicas") != 1:
                problem(obj, f"volume {v['name']}: a claim needs one replica and Recreate")


def check_refs(objs, by_kind):
    pods = [get(d, "spec.template.metadata.labels") or {} for d in by_kind["Deployment"].values()]
    for obj in objs:
        kind = obj["kind"]
        if kind == "Service" and not any(matches(obj["spec"]["selector"], p) for p in pods):
            problem(obj, "selects no pods")
        if kind == "PodDisruptionBudget" and not any(
                matches(obj["spec"]["selector"]["matchLabels"], p) for p in pods):
            problem(obj, "selects no pods")
        if kind == "HorizontalPodAutoscaler" and \
                obj["spec"]["scaleTargetRef"]["name"] not in by_kind["Deployment"]:
            problem(obj, "scales a Deployment that does not exist")


def check_shape(objs, by_kind, env):
    want = SHAPE[env]
    pools = {get(d, "spec.template.metadata.labels").get("shoal.dev/pool")
             for d in by_kind["Deployment"].values()} - {None}
    if pools != want["pools"]:
        problems.append(f"{env}: worker pools {sorted(pools)}, expected {sorted(want['pools'])}")
    for kind, key in (("PodDisruptionBudget", "pdb"), ("HorizontalPodAutoscaler", "hpa")):
        if bool(by_kind[kind]) != want[key]:
            problems.append(f"{env}: {kind} {'missing' if want[key] else 'not expected'}")
    gpus = [d for d in by_kind["Deployment"].values()
            if any("nvidia.com/gpu" in (get(c, "resources.limits") or {})
                   for c in get(d, "spec.template.spec.containers"))]
    if bool(gpus) != want["gpu"]:
        problems.append(f"{env}: GPU workers {'missing' if want['gpu'] else 'not expected'}")
    # Only the GPU image (TAG-gpu, scripts/image.sh --gpu) has the CUDA plugin.
    for d in by_kind["Deployment"].values():
        pod = get(d, "spec.template.spec")
        for c in pod.get("initContainers", []) + pod["containers"]:
            gpu_image = c.get("image", "").endswith("-gpu")
            if gpu_image != (d in gpus):
                problem(d, f"container {c['name']}: image {c.get('image')} on a "
                           f"{'GPU' if d in gpus else 'CPU'} pod")


def drain_grace(by_kind):
    grace = 30000
    for cm in by_kind["ConfigMap"].values():
        for text in cm.get("data", {}).values():
            m = re.search(r"^drain_grace_ms\s*=\s*(\d+)", text, re.M)
            if m:
                grace = int(m.group(1))
    return grace


def main():
    path, env = sys.argv[1], sys.argv[2]
    with open(path) as f:
        objs = [o for o in yaml.safe_load_all(f) if o]
    by_kind = {k: {} for k in REQUIRED}
    for obj in objs:
        check_required(obj)
        by_kind.setdefault(obj.get("kind"), {})[get(obj, "metadata.name")] = obj
    grace = drain_grace(by_kind)
    for d in by_kind["Deployment"].values():
        check_pod(d, by_kind, grace)
    check_refs(objs, by_kind)
    check_shape(objs, by_kind, env)
    for p in problems:
        print(f"{env}: {p}")
    print(f"{env}: {len(objs)} objects, {len(problems)} problem(s)")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
