#!/usr/bin/python3
"""Checks deploy/docker/Dockerfile without building it (a build takes many
minutes): what makes the images small, safe and runnable.

- The runtime stage starts from the slim Debian base, installs no -dev
  package, no compiler and nothing from a CUDA "devel" image, and copies in
  only what the build stage installed plus the default config (no model
  weights).
- It runs as the non-root user the Kubernetes pods run as, with shoald as
  the entrypoint and shoalctl beside it, exposes the ports the manifests
  name, and declares the model cache volume at the path the manifests and
  configs use.
- The build stage installs every -dev package scripts/setup.sh does
  (but those only the tests and benchmarks use).
- Its package list covers every library `ldd` reports for the given
  binaries (shoald, shoalctl, the CUDA plugin): each library's Debian
  package is listed, or is a dependency of a listed one, or is part of
  every Debian base; a CUDA library the plugin needs must be one that
  cuda-runtime-libs.txt copies. So a library added to the build cannot be
  missing from the image.

usage: check_dockerfile.py SOURCE_ROOT BINARY...
Exits 1 with one line per problem, 77 when dpkg (the package database the
coverage check reads) is not there.
"""
import fnmatch
import os
import re
import shlex
import subprocess
import sys

import yaml

problems = []


def problem(what):
    problems.append(what)


def logical_lines(text):
    """The Dockerfile's instructions, continuation lines joined."""
    out, cur = [], ""
    for line in text.splitlines():
        if not cur and (not line.strip() or line.lstrip().startswith("#")):
            continue
        if line.lstrip().startswith("#"):
            continue
        if line.rstrip().endswith("\\"):
            cur += line.rstrip()[:-1] + " "
            continue
        out.append((cur + line).strip())
        cur = ""
    return out


def stages(path):
    """{stage name: [(INSTRUCTION, rest)]}, plus the global ARGs."""
    result, globals_, name = {}, {}, None
    for line in logical_lines(open(path).read()):
        instr, _, rest = line.partition(" ")
        instr = instr.upper()
        if instr == "FROM":
            m = re.fullmatch(r"(\S+)(?:\s+AS\s+(\S+))?", rest.strip(), re.I)
            name = m.group(2) or f"stage{len(result)}"
            result[name] = [("FROM", m.group(1))]
        elif name is None and instr == "ARG":
            k, _, v = rest.partition("=")
            globals_[k.strip()] = v.strip().strip('"')
        elif name is not None:
            result[name].append((instr, rest.strip()))
    return result, globals_


def arg_default(stage, key):
    for instr, rest in stage:
        if instr == "ARG" and rest.startswith(key + "="):
            return rest.split("=", 1)[1].strip().strip('"')
    return None


def check_runtime(stage, globals_, src):
    base = stage[0][1]
    if base == "${BASE}":
        base = globals_.get("BASE", "")
    if "devel" in base or not re.search(r"debian:12-slim$|bookworm-slim$", base):
        problem(f"runtime stage: base {base!r} is not the slim Debian 12 image")
    packages = (arg_default(stage, "RUNTIME_PACKAGES") or "").split()
    if not packages:
        problem("runtime stage: no ARG RUNTIME_PACKAGES")
    for p in packages:
        if p.endswith("-dev") or p in {"g++", "gcc", "meson", "ninja-build", "cmake",
                                       "build-essential", "ccache", "pkg-config"}:
            problem(f"runtime stage installs build package {p}")
        if re.match(r"(cuda|libcuda|nvidia)", p):
            problem(f"runtime stage installs {p}: CUDA comes only with the GPU libraries")
    for instr, rest in stage:
        if instr in ("COPY", "ADD"):
            if "--from=build" not in rest and not rest.startswith("src/deploy/docker/"):
                problem(f"runtime stage: {instr} {rest}: only the build's output and "
                        "deploy/docker files belong in the image")
            if re.search(r"models|\.safetensors|\.pt\b", rest):
                problem(f"runtime stage: {instr} {rest}: model weights are never baked in")
    return packages


def manifest_facts(src):
    """runAsUser, container ports and the model cache mount of the worker and
    head templates."""
    users, ports, cache = set(), set(), set()
    for rel in ("deploy/k8s/base/head.yaml", "deploy/k8s/worker/worker.yaml"):
        for obj in yaml.safe_load_all(open(os.path.join(src, rel))):
            if not obj or obj.get("kind") != "Deployment":
                continue
            spec = obj["spec"]["template"]["spec"]
            users.add(spec.get("securityContext", {}).get("runAsUser"))
            for c in spec["containers"]:
                ports |= {p["containerPort"] for p in c.get("ports", [])}
                cache |= {m["mountPath"] for m in c.get("volumeMounts", [])
                          if m["name"] == "model-cache"}
    return users, ports, cache


def toml_value(path, key):
    m = re.search(rf"^{key}\s*=\s*\"([^\"]*)\"", open(path).read(), re.M)
    return m.group(1) if m else None


def check_shape(stage, src):
    instrs = {}
    for instr, rest in stage:
        instrs.setdefault(instr, []).append(rest)
    users, ports, cache = manifest_facts(src)
    user = (instrs.get("USER") or [""])[-1].split(":")[0]
    if not user.isdigit() or int(user) == 0:
        problem(f"runtime stage: USER {user!r} must be a numeric non-root uid "
                "(Kubernetes' runAsNonRoot can only check a number)")
    elif users != {int(user)}:
        problem(f"runtime stage: USER {user} but the pods run as {sorted(users)}")
    entry = (instrs.get("ENTRYPOINT") or ["[]"])[-1]
    if not re.fullmatch(r'\[\s*"[^"]*/shoald"\s*\]', entry):
        problem(f"ENTRYPOINT {entry}: must be shoald alone (arguments go in CMD)")
    exposed = {int(p.split("/")[0]) for e in instrs.get("EXPOSE", []) for p in e.split()}
    if not ports <= exposed:
        problem(f"EXPOSE {sorted(exposed)} lacks the manifests' ports {sorted(ports - exposed)}")
    volumes = set(re.findall(r'"([^"]+)"', " ".join(instrs.get("VOLUME", []))))
    k8s_cache = toml_value(os.path.join(src, "deploy/k8s/base/shoal.toml"), "cache_dir")
    image_cache = toml_value(os.path.join(src, "deploy/docker/shoal.toml"), "cache_dir")
    if not cache or len(cache | volumes | {k8s_cache, image_cache}) != 1:
        problem(f"model cache paths differ: VOLUME {sorted(volumes)}, manifests' mounts "
                f"{sorted(cache)}, k8s cache_dir {k8s_cache}, image cache_dir {image_cache}")


# -dev packages of scripts/setup.sh that only the tests and benchmarks use.
TEST_ONLY_DEV = {"libgmock-dev", "libbenchmark-dev"}
# The images leave the torch plugin out (libtorch would triple the CPU
# image); a node there answers torch models UNAVAILABLE, naming the plugin.
NOT_IN_IMAGES_DEV = {"libtorch-dev"}


def setup_packages(src):
    text = open(os.path.join(src, "scripts/setup.sh")).read()
    body = re.search(r"^PACKAGES=\((.*?)^\)", text, re.M | re.S).group(1)
    return {w for line in body.splitlines() for w in line.split("#")[0].split()}


def check_build(stage, src):
    building = set((arg_default(stage, "BUILD_PACKAGES") or "").split())
    for p in sorted(setup_packages(src)):
        if (p.endswith("-dev") and p not in TEST_ONLY_DEV | NOT_IN_IMAGES_DEV
                and p not in building):
            problem(f"build stage: scripts/setup.sh installs {p}, the image build does not")
    text = " ".join(rest for instr, rest in stage if instr == "RUN")
    for cmd in ("shoald", "shoalctl"):
        if f"/build/{cmd}" not in text:
            problem(f"build stage does not install {cmd}")
    if "/out/usr/local/bin" not in text:
        problem("build stage does not put the commands in /usr/local/bin")


# -- library coverage ---------------------------------------------------------

def dpkg_status():
    """{package: (set of dependencies, base?)} from the host's dpkg database."""
    out = subprocess.run(["dpkg-query", "-W", "-f",
                          "${Package}\t${Essential}\t${Priority}\t${Pre-Depends}, ${Depends}\n"],
                         capture_output=True, text=True, check=True).stdout
    db = {}
    for line in out.splitlines():
        name, essential, priority, deps = line.split("\t")
        alts = set()
        for dep in deps.split(","):
            for alt in dep.split("|"):
                alt = alt.strip().split(" ")[0].split(":")[0]
                if alt:
                    alts.add(alt)
        db[name] = (alts, essential == "yes" or priority == "required")
    return db


def closure(roots, db):
    seen, todo = set(), list(roots)
    while todo:
        p = todo.pop()
        if p in seen:
            continue
        seen.add(p)
        todo.extend(db.get(p, (set(), False))[0])
    return seen


def candidates(path):
    """`path` and its other spellings (merged /usr, symlinks resolved)."""
    out = {path, os.path.realpath(path)}
    for p in list(out):
        if p.startswith("/usr/lib/"):
            out.add(p[len("/usr"):])
        elif p.startswith("/lib/"):
            out.add("/usr" + p)
    return out


def owners(paths):
    """{path: the Debian package that ships it} in one dpkg-query (one a
    path is slow: dpkg reads every package's file list each time)."""
    spellings = {p: candidates(p) for p in paths}
    every = sorted(set().union(*spellings.values())) if spellings else []
    out = subprocess.run(["dpkg-query", "-S"] + every, capture_output=True,
                         text=True).stdout
    shipped = {}
    for line in out.splitlines():
        pkg, _, p = line.partition(": ")
        shipped[p.strip()] = pkg.split(":")[0].split(",")[0].strip()
    return {p: next((shipped[c] for c in sorted(s) if c in shipped), None)
            for p, s in spellings.items()}


def ldd(binary):
    out = subprocess.run(["ldd", binary], capture_output=True, text=True).stdout
    libs = []
    for line in out.splitlines():
        m = re.match(r"\s*(\S+) => (not found|\S+)", line)
        if m:
            libs.append((m.group(1), m.group(2)))
    return libs


def check_libraries(packages, binaries, src):
    db = dpkg_status()
    base = {p for p, (_, b) in db.items() if b}
    covered = closure(set(packages) | base, db)
    cuda_patterns = [line.split()[0] for line in
                     open(os.path.join(src, "deploy/docker/cuda-runtime-libs.txt"))
                     if line.strip() and not line.startswith("#")]
    # The image builds without sanitizers; a -Db_sanitize build's runtimes
    # are not the image's to ship.
    sanitizer = re.compile(r"lib(asan|ubsan|lsan|tsan)\.so")
    found = [(os.path.basename(b), soname, path) for b in binaries
             for soname, path in ldd(b) if not sanitizer.match(soname)]
    shipped = owners([path for _, _, path in found if path != "not found"])
    for name, soname, path in found:
        if path == "not found":
            problem(f"{name}: ldd cannot find {soname} on this machine either")
            continue
        pkg = shipped.get(path)
        if pkg is None:
            if "/cuda" in path and any(fnmatch.fnmatch(soname, p) for p in cuda_patterns):
                continue
            problem(f"{name}: {soname} ({path}) comes from no Debian package and is "
                    "not a CUDA library that cuda-runtime-libs.txt copies")
        elif pkg not in covered:
            problem(f"{name}: {soname} is in package {pkg}, which the runtime stage "
                    "neither lists nor gets through a listed package")
    checked = len(found)
    return checked


def main():
    src, binaries = sys.argv[1], sys.argv[2:]
    path = os.path.join(src, "deploy/docker/Dockerfile")
    st, globals_ = stages(path)
    for name in ("build", "runtime"):
        if name not in st:
            problem(f"Dockerfile has no stage named {name}")
    if problems:
        print("\n".join(problems))
        return 1
    if list(st)[-1] != "runtime":
        problem("the last stage (the image) must be runtime")
    packages = check_runtime(st["runtime"], globals_, src)
    check_shape(st["runtime"], src)
    check_build(st["build"], src)
    if subprocess.run(["sh", "-c", "command -v dpkg-query && command -v ldd"],
                      capture_output=True).returncode != 0:
        print("\n".join(problems) or "Dockerfile: shape OK")
        print("SKIP: no dpkg-query or ldd here: the library coverage was not checked")
        return 1 if problems else 77
    checked = check_libraries(packages, binaries, src)
    for p in problems:
        print(f"Dockerfile: {p}")
    print(f"Dockerfile: {len(packages)} runtime packages cover {checked} libraries of "
          f"{len(binaries)} binaries; {len(problems)} problem(s)")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
