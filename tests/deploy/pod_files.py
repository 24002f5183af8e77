#!/usr/bin/python3
"""Lays out, under ROOT, the files one pod of a rendered shoal overlay sees.

The pod's ConfigMap and Secret volumes are written from the rendered
objects (with their defaultMode), its init containers' shell commands run
on them (so the install-secrets copy is the manifest's own command), and
the shoald container's arguments and environment are written to ROOT/args
and ROOT/env (one per line, NAME=VALUE), every absolute pod path moved
under ROOT. Paths inside the mounted config files are moved the same way.
POD_NAME is the Deployment's name, POD_IP 127.0.0.1.

usage: pod_files.py RENDERED.yaml DEPLOYMENT ROOT
"""
import base64
import os
import re
import subprocess
import sys

import yaml

POD_PATHS = re.compile(r"(?<![\w/.])/(etc/shoal|run/secret-volumes|var/cache/shoal|var/lib/shoal)\b")


def under(root, text):
    return POD_PATHS.sub(lambda m: f"{root}/{m.group(1)}", text)


def volume_files(volume, objects):
    if "configMap" in volume:
        src = objects[("ConfigMap", volume["configMap"]["name"])]
        return {k: v.encode() for k, v in src.get("data", {}).items()}, volume["configMap"]
    if "secret" in volume:
        src = objects[("Secret", volume["secret"]["secretName"])]
        return {k: base64.b64decode(v) for k, v in src.get("data", {}).items()}, volume["secret"]
    return {}, {}


def mount(root, container, volumes, objects):
    for m in container.get("volumeMounts", []):
        path = root + m["mountPath"]
        os.makedirs(path, exist_ok=True)
        files, spec = volume_files(volumes[m["name"]], objects)
        for name, data in files.items():
            if name.endswith(".toml"):
                data = under(root, data.decode()).encode()
            target = os.path.join(path, name)
            if os.path.exists(target):
                os.chmod(target, 0o600)
            with open(target, "wb") as f:
                f.write(data)
            os.chmod(target, spec.get("defaultMode", 0o644))


def main():
    rendered, deployment, root = sys.argv[1:4]
    root = os.path.abspath(root)
    objects = {}
    for obj in yaml.safe_load_all(open(rendered)):
        if obj:
            objects[(obj["kind"], obj["metadata"]["name"])] = obj
    pod = objects[("Deployment", deployment)]["spec"]["template"]["spec"]
    volumes = {v["name"]: v for v in pod.get("volumes", [])}
    for c in pod.get("initContainers", []):
        mount(root, c, volumes, objects)
        command = c.get("command", [])
        if command[:2] == ["/bin/sh", "-c"]:
            subprocess.run(["/bin/sh", "-c", under(root, command[2])], check=True)
    shoald = next(c for c in pod["containers"] if c["name"] == "shoald")
    mount(root, shoald, volumes, objects)
    values = {"POD_NAME": deployment, "POD_IP": "127.0.0.1"}
    env = []
    for e in shoald.get("env", []):
        if "value" in e:
            value = re.sub(r"\$\((\w+)\)", lambda m: values.get(m.group(1), ""), e["value"])
            env.append(f"{e['name']}={under(root, value)}")
    with open(os.path.join(root, "env"), "w") as f:
        f.write("".join(line + "\n" for line in env))
    with open(os.path.join(root, "args"), "w") as f:
        f.write("".join(under(root, a) + "\n" for a in shoald.get("args", [])))


if __name__ == "__main__":
    main()
