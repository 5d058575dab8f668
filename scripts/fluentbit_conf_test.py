"""Tests of scripts/fluentbit_conf.py (run by scripts/check-deploy):

    python3 scripts/fluentbit_conf_test.py
"""

import sys
import unittest
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import fluentbit_conf as fb  # noqa: E402

PARSERS = """\
[PARSER]
    Name         ecs_json
    Format       json
    Time_Key     @timestamp
    Time_Format  %Y-%m-%dT%H:%M:%S.%LZ
"""

GOOD = """\
# a comment
@INCLUDE /creds.conf

[SERVICE]
    Flush         2
    Parsers_File  /etc/parsers.conf
    HTTP_Server   On
    Health_Check  On

[INPUT]
    Name   tail
    Tag    kube.*
    Path   /var/log/containers/*_ns_app-*.log
    DB     /state/tail.db

[FILTER]
    Name             kubernetes
    Match            kube.*
    Kube_Tag_Prefix  kube.var.log.containers.

[FILTER]
    Name          parser
    Match         kube.*
    Key_Name      log
    Parser        ecs_json
    Reserve_Data  On

[FILTER]
    Name    modify
    Match   kube.*
    Rename  log message
    Remove  _p
    Remove  time

[OUTPUT]
    Name         es
    Match        kube.*
    Host         ${ES_HOST}
    Port         9200
    HTTP_Passwd  ${ES_PASSWORD}
"""

FILES = {"/etc/parsers.conf": PARSERS, "/creds.conf": "@SET ES_PASSWORD=secret\n"}
ENV = {"ES_HOST": "es.example"}


def errors(text=GOOD, files=None, env=None):
    return fb.check(text, "t.conf", FILES if files is None else files, ENV if env is None else env)


class Parse(unittest.TestCase):
    def test_a_good_configuration_has_no_errors(self):
        self.assertEqual(errors(), [])

    def test_sections_entries_and_includes(self):
        sections, variables = fb.parse(GOOD, "t.conf", FILES, ENV)
        self.assertEqual([s.name for s in sections], ["SERVICE", "INPUT", "FILTER", "FILTER", "FILTER", "OUTPUT"])
        self.assertEqual(variables["ES_PASSWORD"], "secret")
        modify = sections[4]
        self.assertEqual(modify.all("remove"), ["_p", "time"])
        self.assertEqual(modify.get("rename"), "log message")

    def assertError(self, text, fragment, files=None, env=None):
        got = errors(text, files, env)
        self.assertTrue(any(fragment in e for e in got), f"{fragment!r} not in {got}")

    def test_syntax_errors(self):
        self.assertError("    Flush 1\n", "entry outside a section")
        self.assertError("[SERVICE]\nFlush 1\n", "must be indented")
        self.assertError("[SERVICE]\n\tFlush 1\n", "tab in indentation")
        self.assertError("[SERVICE]\n    Flush 1\n  Daemon off\n", "indentation 2, the file uses 4")
        self.assertError("[SERVICES]\n    Flush 1\n", "unknown section")
        self.assertError("  [SERVICE]\n", "column 0")
        self.assertError("[SERVICE]\n    Flush\n", "has no value")
        self.assertError("@INCLUDE /nowhere.conf\n", "no such file")
        self.assertError("@SET nope\n", "KEY=VALUE")
        self.assertError("@FOO x\n", "unknown directive")

    def test_schema_errors(self):
        self.assertError(GOOD.replace("Reserve_Data  On", "Reserve_Data  maybe"), "not a valid value")
        self.assertError(GOOD.replace("Flush         2", "Flush         soon"), "not a valid value")
        self.assertError(GOOD.replace("Key_Name      log", "Key_Nam       log"), "unknown key key_nam")
        self.assertError(GOOD.replace("    Key_Name      log\n", ""), "key_name is required")
        self.assertError(GOOD.replace("Name         es", "Name         elastic"), "unknown plugin")
        self.assertError(GOOD.replace("Port         9200", "Port         9200\n    Port         9201"), "given twice")
        self.assertError(GOOD.replace("Rename  log message", "Rename  log"), "needs 2 arguments")
        self.assertError(GOOD.replace("DB     /state/tail.db", "DB     state/tail.db"), "not a valid value")

    def test_references(self):
        self.assertError(GOOD.replace("Parser        ecs_json", "Parser        nope"), "parser nope is not defined")
        self.assertError(GOOD, "undefined ${ES_HOST}", env={})
        self.assertError(GOOD, "undefined ${ES_PASSWORD}", files={"/etc/parsers.conf": PARSERS, "/creds.conf": ""})
        self.assertError(GOOD, "Parsers_File /etc/parsers.conf is not provided",
                         files={"/creds.conf": FILES["/creds.conf"]})
        self.assertError(GOOD.replace("Match        kube.*", "Match        docker.*"), "matches no input's tag")
        self.assertError(GOOD.replace("Match        kube.*", "Match        docker.*"), "no [OUTPUT] matches tag")
        self.assertError(GOOD.replace("Kube_Tag_Prefix  kube.var.log.containers.", "Kube_Tag_Prefix  kube.var.log.pods."),
                         "is not a prefix of tag kube.var.log.containers.")
        self.assertError(GOOD.replace("HTTP_Server   On", "HTTP_Server   Off"), "Health_Check needs HTTP_Server On")

    def test_ecs_fields_must_keep_their_dots(self):
        self.assertError(GOOD.replace("Port         9200", "Port         9200\n    Replace_Dots On"), "Replace_Dots On")

    def test_time_formats(self):
        parser = fb.parsers_of(GOOD, "t.conf", FILES, ENV)["ecs_json"]
        self.assertTrue(fb.parses_time(parser, "2026-11-27T04:05:06.789Z"))
        self.assertFalse(fb.parses_time(parser, "2026-11-27 04:05:06"))


if __name__ == "__main__":
    unittest.main()
