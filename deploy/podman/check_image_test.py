#!/usr/bin/env python3
"""Tests of check-image.py against deploy/Dockerfile and made-up images:
the check passes on an image built as the Dockerfile says and fails on
each kind of drift (run by scripts/check-deploy)."""
import importlib.util
import io
import json
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import unittest

HERE = os.path.dirname(os.path.abspath(__file__))
DOCKERFILE = os.path.join(HERE, "..", "Dockerfile")
spec = importlib.util.spec_from_file_location("check_image", os.path.join(HERE, "check-image.py"))
check_image = importlib.util.module_from_spec(spec)
spec.loader.exec_module(check_image)

ARGS = {"VERSION": "9.9.9", "REVISION": "abc", "CREATED": "2026-01-01T00:00:00Z"}
LIBS = ["/lib", "/lib/x86_64-linux-gnu", "/lib/x86_64-linux-gnu/libc.so.6",
        "/lib64", "/lib64/ld-linux-x86-64.so.2"]


class CheckImage(unittest.TestCase):
    def tearDown(self):
        shutil.rmtree(self.dir, ignore_errors=True)

    def setUp(self):
        with open(DOCKERFILE) as f:
            self.text = f.read()
        self.dir = tempfile.mkdtemp()
        self.bins = check_image.binaries(self.text)

    def image(self, config_change=None, extra_files=(), tmp_mode=0o1777, drop=None):
        want = check_image.declared(self.text, ARGS)
        config = {
            "User": want["user"],
            "Entrypoint": want["entrypoint"],
            "ExposedPorts": {p: {} for p in want["expose"]},
            "Env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"]
                   + [f"{k}={v}" for k, v in want["env"].items()],
            "Labels": dict(want["labels"], **{"io.buildah.version": "1.28.2"}),
        }
        if config_change:
            config_change(config)
        d = tempfile.mkdtemp(dir=self.dir)
        inspect = os.path.join(d, "inspect.json")
        with open(inspect, "w") as f:
            json.dump([{"Config": config}], f)
        paths = ["/usr", "/usr/local", "/usr/local/bin", "/tmp"] + LIBS + \
                [f"/usr/local/bin/{b}" for b in self.bins]
        expected = os.path.join(d, "expected")
        with open(expected, "w") as f:
            f.write("\n".join(sorted(paths)) + "\n")
        tar_path = os.path.join(d, "image.tar")
        with tarfile.open(tar_path, "w") as tar:
            for p in sorted(set(paths) | set(extra_files)):
                if p == drop:
                    continue
                info = tarfile.TarInfo(p.lstrip("/"))
                is_dir = not ("." in p.rsplit("/", 1)[-1] or p.startswith("/usr/local/bin/")
                              or p in extra_files)
                if is_dir:
                    info.type = tarfile.DIRTYPE
                    info.mode = tmp_mode if p == "/tmp" else 0o755
                    tar.addfile(info)
                else:
                    info.mode = 0o755
                    tar.addfile(info, io.BytesIO(b""))
        return inspect, tar_path, expected

    def run_check(self, *files):
        args = [f"{k}={v}" for k, v in ARGS.items()]
        return subprocess.run(
            [sys.executable, os.path.join(HERE, "check-image.py"), "check", DOCKERFILE, *files, *args],
            capture_output=True, text=True)

    def test_the_dockerfile_lists_every_binary(self):
        for b in ["ingest-api", "analyzer", "alerts-api", "data-generator", "ha-admin",
                  "ha-detect", "hello", "cpu-stresser", "ram-hogger"]:
            self.assertIn(b, self.bins)

    def test_the_containerfile_is_the_runtime_stage_from_the_staged_root(self):
        cf = check_image.containerfile(self.text)
        self.assertTrue(cf.startswith("FROM scratch AS runtime"))
        self.assertIn("COPY out/ /", cf)
        self.assertNotIn("--from=build", cf)
        self.assertNotIn("cargo build", cf)

    def test_an_image_built_as_declared_passes(self):
        r = self.run_check(*self.image())
        self.assertEqual(r.returncode, 0, r.stderr)

    def test_each_drift_fails(self):
        cases = {
            "USER": self.image(lambda c: c.update(User="0:0")),
            "ENTRYPOINT": self.image(lambda c: c.update(Entrypoint=["/usr/local/bin/hello"])),
            "EXPOSE": self.image(lambda c: c["ExposedPorts"].pop("9100/tcp")),
            "ENV": self.image(lambda c: c["Env"].append("HA_DEBUG=1")),
            "LABEL": self.image(lambda c: c["Labels"].update(
                {"org.opencontainers.image.version": "0.0.1"})),
            "shells in the image": self.image(extra_files=["/bin/sh"]),
            "mode 1777": self.image(tmp_mode=0o755),
            "only in the Dockerfile's root": self.image(drop="/usr/local/bin/ram-hogger"),
        }
        for what, files in cases.items():
            r = self.run_check(*files)
            self.assertEqual(r.returncode, 1, f"{what}: {r.stdout}")
            self.assertIn(what, r.stderr, what)


if __name__ == "__main__":
    unittest.main(verbosity=1)
