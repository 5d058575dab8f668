#!/usr/bin/env python3
"""deploy/Dockerfile as data, for deploy/build-image (standard library only).

  check-image.py binaries DOCKERFILE
      the binaries the build stage copies (its `for b in ...` loop), one a line
  check-image.py containerfile DOCKERFILE
      the runtime stage, its `COPY --from=build /out/ /` pointed at `out/`
  check-image.py check DOCKERFILE INSPECT_JSON IMAGE_TAR EXPECTED_FILES ARG=VALUE...
      compares a built image (`podman image inspect`, `podman export`) with
      the runtime stage: USER, ENTRYPOINT, EXPOSE, ENV, LABELs (ARGs
      expanded), and its files with EXPECTED_FILES (what the build stage's
      steps put in /out); /tmp must be 1777, the binaries executable, and
      nothing in it a shell. Exit 1 with every difference listed.

The only things a builder adds by itself are allowed: the default PATH in
ENV (Docker and buildah both set it on a `scratch` image) and buildah's
`io.buildah.version` label.
"""
import json
import re
import shlex
import sys
import tarfile

RUNTIME_FROM = re.compile(r"^FROM\s+scratch\s+AS\s+runtime\s*$", re.I)
COPY_BUILD = "COPY --from=build /out/ /"
BUILDER_ENV = re.compile(r"^PATH=")
BUILDER_LABELS = {"io.buildah.version"}
SHELLS = {"sh", "bash", "dash", "ash", "zsh", "ksh", "busybox", "toybox"}


def logical_lines(text):
    """Dockerfile instructions: continuations joined, comments dropped."""
    out, cur = [], ""
    for raw in text.splitlines():
        line = raw.rstrip()
        if not cur and (not line.strip() or line.lstrip().startswith("#")):
            continue
        if line.lstrip().startswith("#"):
            continue
        if line.endswith("\\"):
            cur += line[:-1] + " "
            continue
        out.append((cur + line).strip())
        cur = ""
    if cur:
        out.append(cur.strip())
    return out


def runtime_stage_text(text):
    lines = text.splitlines(keepends=True)
    for i, line in enumerate(lines):
        if RUNTIME_FROM.match(line.strip()):
            rest = lines[i:]
            for j, later in enumerate(rest[1:], 1):
                if later.startswith("FROM "):
                    return "".join(rest[:j])
            return "".join(rest)
    sys.exit("check-image: no `FROM scratch AS runtime` stage in the Dockerfile")


def binaries(text):
    m = re.search(r"for b in (.*?); do", " ".join(logical_lines(text)))
    if not m:
        sys.exit("check-image: no `for b in ...; do` loop in the Dockerfile")
    return m.group(1).split()


def containerfile(text):
    stage = runtime_stage_text(text)
    if stage.count(COPY_BUILD) != 1:
        sys.exit(f"check-image: the runtime stage must hold `{COPY_BUILD}` exactly once")
    return stage.replace(COPY_BUILD, "COPY out/ /")


def declared(text, args):
    """The runtime stage's configuration, ARGs expanded."""
    conf = {"labels": {}, "env": {}, "expose": set(), "user": None, "entrypoint": None}
    values = {}

    def expand(s):
        return re.sub(r"\$\{(\w+)\}|\$(\w+)", lambda m: values.get(m.group(1) or m.group(2), ""), s)

    for line in logical_lines(runtime_stage_text(text)):
        word, _, rest = line.partition(" ")
        word = word.upper()
        if word == "ARG":
            name, _, default = rest.strip().partition("=")
            values[name] = args.get(name, default)
        elif word == "LABEL":
            for pair in shlex.split(rest):
                k, _, v = pair.partition("=")
                conf["labels"][k] = expand(v)
        elif word == "ENV":
            for pair in shlex.split(rest):
                k, _, v = pair.partition("=")
                conf["env"][k] = expand(v)
        elif word == "EXPOSE":
            conf["expose"] |= {p if "/" in p else f"{p}/tcp" for p in rest.split()}
        elif word == "USER":
            conf["user"] = rest.strip()
        elif word == "ENTRYPOINT":
            conf["entrypoint"] = json.loads(rest)
    return conf


def check(text, inspect_path, tar_path, expected_path, args):
    problems = []
    want = declared(text, args)
    with open(inspect_path) as f:
        image = json.load(f)[0]
    cfg = image.get("Config", {})
    if cfg.get("User") != want["user"]:
        problems.append(f"USER: image {cfg.get('User')!r}, Dockerfile {want['user']!r}")
    if cfg.get("Entrypoint") != want["entrypoint"]:
        problems.append(f"ENTRYPOINT: image {cfg.get('Entrypoint')}, Dockerfile {want['entrypoint']}")
    exposed = set((cfg.get("ExposedPorts") or {}).keys())
    if exposed != want["expose"]:
        problems.append(f"EXPOSE: image {sorted(exposed)}, Dockerfile {sorted(want['expose'])}")
    env = dict(e.split("=", 1) for e in cfg.get("Env") or [] if not BUILDER_ENV.match(e))
    if env != want["env"]:
        problems.append(f"ENV: image {env}, Dockerfile {want['env']}")
    labels = {k: v for k, v in (cfg.get("Labels") or {}).items() if k not in BUILDER_LABELS}
    if labels != want["labels"]:
        diff = {k: (labels.get(k), want["labels"].get(k))
                for k in set(labels) | set(want["labels"]) if labels.get(k) != want["labels"].get(k)}
        problems.append(f"LABEL (image, Dockerfile): {diff}")

    with open(expected_path) as f:
        expected = {line.strip() for line in f if line.strip()}
    bins = {f"/usr/local/bin/{b}" for b in binaries(text)}
    missing_bins = bins - expected
    if missing_bins:
        problems.append(f"staged root lacks {sorted(missing_bins)}")
    members = {}
    with tarfile.open(tar_path) as tar:
        for m in tar.getmembers():
            members["/" + m.name.strip("./").rstrip("/")] = m
    members.pop("/", None)
    files = set(members)
    if files != expected:
        problems.append(f"files only in the image: {sorted(files - expected)}; "
                        f"only in the Dockerfile's root: {sorted(expected - files)}")
    tmp = members.get("/tmp")
    if tmp is None or not tmp.isdir() or (tmp.mode & 0o7777) != 0o1777:
        problems.append(f"/tmp is not a directory of mode 1777: {oct(tmp.mode) if tmp else None}")
    for b in sorted(bins):
        m = members.get(b)
        if m is None or not m.isfile() or not m.mode & 0o111:
            problems.append(f"{b} is not an executable file in the image")
    shells = sorted(n for n in files if n.rsplit("/", 1)[-1] in SHELLS)
    if shells:
        problems.append(f"shells in the image: {shells}")
    if problems:
        print("check-image: the image differs from deploy/Dockerfile:", file=sys.stderr)
        for p in problems:
            print(f"  - {p}", file=sys.stderr)
        sys.exit(1)
    print(f"[check-image] image matches deploy/Dockerfile: {len(files)} paths "
          f"({len(bins)} binaries, {len(expected - bins) - 0} directories and libraries), "
          f"USER {want['user']}, ENTRYPOINT {want['entrypoint']}, EXPOSE {' '.join(sorted(want['expose']))}, "
          f"{len(want['env'])} ENV, {len(want['labels'])} LABELs; /tmp 1777; no shell")


def main(argv):
    if len(argv) < 3:
        sys.exit(__doc__)
    cmd, dockerfile = argv[1], argv[2]
    with open(dockerfile) as f:
        text = f.read()
    if cmd == "binaries":
        print("\n".join(binaries(text)))
    elif cmd == "containerfile":
        sys.stdout.write(containerfile(text))
    elif cmd == "check" and len(argv) >= 6:
        args = dict(a.split("=", 1) for a in argv[6:])
        check(text, argv[3], argv[4], argv[5], args)
    else:
        sys.exit(__doc__)


if __name__ == "__main__":
    main(sys.argv)
