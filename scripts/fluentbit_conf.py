"""Fluent Bit classic-format configuration: a parser and a schema check.

The grammar is Fluent Bit's "classic mode" (docs.fluentbit.io, Administration
> Configuring Fluent Bit > Classic mode): `[SECTION]` headers at column 0;
entries `Key Value` indented with spaces, the same indentation throughout a
file (Fluent Bit rejects tabs and uneven indentation); whole-line `#`
comments; `@INCLUDE file` and `@SET KEY=VALUE` at column 0; `${VAR}` in
values from @SET or the environment.

The schema below is written from the Fluent Bit 3.2 manual's pages for the
sections and plugins we use (SERVICE, INPUT tail, FILTER kubernetes / parser
/ modify / grep, OUTPUT es, PARSER): the keys each takes (case-insensitive,
as Fluent Bit reads them), their value types, the required ones, and the
keys that may repeat. A key not listed is an error: a typo would otherwise
be ignored by nobody but Fluent Bit at start-up.

    check(text, path, files, env) -> [error, ...]

`files` maps paths the configuration names (Parsers_File, @INCLUDE) to their
text, `env` the environment variables the process will have.
"""

import fnmatch
import re
from dataclasses import dataclass, field
from datetime import datetime

SECTIONS = {"SERVICE", "INPUT", "FILTER", "OUTPUT", "PARSER", "MULTILINE_PARSER"}


class ConfError(Exception):
    pass


@dataclass
class Section:
    name: str
    line: int
    path: str
    entries: list = field(default_factory=list)  # (key lowercased, value, line)

    def get(self, key, default=None):
        for k, v, _ in self.entries:
            if k == key:
                return v
        return default

    def all(self, key):
        return [v for k, v, _ in self.entries if k == key]

    def where(self):
        return f"{self.path}:{self.line} [{self.name}]"


def parse(text, path, files=None, env=None):
    """Sections of `text` (includes expanded from `files`), and the @SET
    variables. Raises ConfError on a syntax error."""
    files = files or {}
    variables = dict(env or {})
    sections = []
    _parse_into(text, path, files, variables, sections, depth=0)
    return sections, variables


def _parse_into(text, path, files, variables, sections, depth):
    if depth > 8:
        raise ConfError(f"{path}: @INCLUDE nested too deep")
    indent = None
    current = None
    for n, raw in enumerate(text.splitlines(), 1):
        where = f"{path}:{n}"
        if "\t" in raw[: len(raw) - len(raw.lstrip())]:
            raise ConfError(f"{where}: tab in indentation (Fluent Bit accepts spaces only)")
        line = raw.rstrip()
        stripped = line.lstrip()
        if not stripped or stripped.startswith("#"):
            continue
        lead = len(line) - len(stripped)
        if stripped.startswith("@"):
            if lead:
                raise ConfError(f"{where}: {stripped.split()[0]} must start at column 0")
            word, _, rest = stripped.partition(" ")
            rest = rest.strip()
            if word.upper() == "@INCLUDE":
                if rest not in files:
                    raise ConfError(f"{where}: @INCLUDE {rest}: no such file among {sorted(files)}")
                _parse_into(files[rest], rest, files, variables, sections, depth + 1)
            elif word.upper() == "@SET":
                m = re.fullmatch(r"([A-Za-z_][A-Za-z0-9_]*)=(.*)", rest)
                if not m:
                    raise ConfError(f"{where}: @SET needs KEY=VALUE")
                variables[m.group(1)] = m.group(2)
            else:
                raise ConfError(f"{where}: unknown directive {word}")
            current = None
            continue
        if stripped.startswith("["):
            if lead:
                raise ConfError(f"{where}: section header must start at column 0")
            m = re.fullmatch(r"\[([A-Z_]+)\]", stripped)
            if not m or m.group(1) not in SECTIONS:
                raise ConfError(f"{where}: unknown section {stripped}")
            current = Section(m.group(1), n, path)
            sections.append(current)
            continue
        if current is None:
            raise ConfError(f"{where}: entry outside a section")
        if lead == 0:
            raise ConfError(f"{where}: entry must be indented")
        if indent is None:
            indent = lead
        elif lead != indent:
            raise ConfError(f"{where}: indentation {lead}, the file uses {indent}")
        parts = stripped.split(None, 1)
        if len(parts) < 2:
            raise ConfError(f"{where}: key {parts[0]} has no value")
        current.entries.append((parts[0].lower(), parts[1].strip(), n))


# --- schema --------------------------------------------------------------------

BOOL = re.compile(r"(?i)on|off|true|false|yes|no")
INT = re.compile(r"[0-9]+")
SIZE = re.compile(r"(?i)[0-9]+(k|kb|m|mb|g|gb)?")
PATH = re.compile(r"/\S*")
TEXT = re.compile(r".+")


def enum(*values):
    return re.compile("(?i)" + "|".join(re.escape(v) for v in values))


def is_on(value):
    return value.lower() in ("on", "true", "yes")


# key -> value pattern; "!" prefix: required; keys in REPEAT may repeat.
SERVICE = {
    "flush": INT, "grace": INT, "daemon": BOOL, "log_level": enum("off", "error", "warn", "info", "debug", "trace"),
    "log_file": PATH, "parsers_file": PATH, "plugins_file": PATH, "http_server": BOOL, "http_listen": TEXT,
    "http_port": INT, "health_check": BOOL, "hc_errors_count": INT, "hc_retry_failure_count": INT, "hc_period": INT,
    "storage.path": PATH, "storage.sync": enum("normal", "full"), "storage.checksum": BOOL,
    "storage.backlog.mem_limit": SIZE, "storage.metrics": BOOL, "storage.max_chunks_up": INT,
}
INPUT_COMMON = {"!name": TEXT, "tag": TEXT, "alias": TEXT, "log_level": SERVICE["log_level"], "threaded": BOOL,
                "mem_buf_limit": SIZE, "storage.type": enum("memory", "filesystem")}
FILTER_COMMON = {"!name": TEXT, "match": TEXT, "match_regex": TEXT, "alias": TEXT, "log_level": SERVICE["log_level"]}
OUTPUT_COMMON = dict(FILTER_COMMON, retry_limit=re.compile(r"(?i)[0-9]+|false|no_limits|no_retries"), workers=INT)
OUTPUT_COMMON["storage.total_limit_size"] = SIZE
PLUGINS = {
    ("INPUT", "tail"): dict(INPUT_COMMON, **{
        "!path": TEXT, "exclude_path": TEXT, "path_key": TEXT, "offset_key": TEXT, "read_from_head": BOOL,
        "refresh_interval": INT, "rotate_wait": INT, "ignore_older": TEXT, "buffer_chunk_size": SIZE,
        "buffer_max_size": SIZE, "skip_long_lines": BOOL, "skip_empty_lines": BOOL, "db": PATH,
        "db.sync": enum("extra", "full", "normal", "off"), "db.locking": BOOL,
        "db.journal_mode": enum("wal", "delete", "truncate", "persist", "memory", "off"), "exit_on_eof": BOOL,
        "parser": TEXT, "key": TEXT, "inotify_watcher": BOOL, "tag_regex": TEXT, "static_batch_size": SIZE,
        "multiline.parser": TEXT, "docker_mode": BOOL, "docker_mode.flush": INT,
    }),
    ("FILTER", "kubernetes"): dict(FILTER_COMMON, **{
        "kube_url": re.compile(r"https?://\S+"), "kube_ca_file": PATH, "kube_ca_path": PATH,
        "kube_token_file": PATH, "kube_token_ttl": TEXT, "kube_tag_prefix": TEXT, "merge_log": BOOL,
        "merge_parser": TEXT, "merge_log_key": TEXT, "merge_log_trim": BOOL, "keep_log": BOOL, "labels": BOOL,
        "annotations": BOOL, "k8s-logging.parser": BOOL, "k8s-logging.exclude": BOOL, "use_kubelet": BOOL,
        "kubelet_port": INT, "buffer_size": SIZE, "kube_meta_cache_ttl": TEXT, "tls.verify": BOOL,
        "namespace_labels": BOOL, "namespace_annotations": BOOL,
    }),
    ("FILTER", "parser"): dict(FILTER_COMMON, **{
        "!key_name": TEXT, "!parser": TEXT, "preserve_key": BOOL, "reserve_data": BOOL,
    }),
    ("FILTER", "modify"): dict(FILTER_COMMON, **{
        "set": TEXT, "add": TEXT, "remove": TEXT, "remove_wildcard": TEXT, "remove_regex": TEXT,
        "rename": TEXT, "hard_rename": TEXT, "copy": TEXT, "hard_copy": TEXT, "condition": TEXT,
    }),
    ("FILTER", "grep"): dict(FILTER_COMMON, **{"regex": TEXT, "exclude": TEXT, "logical_op": enum("and", "or", "legacy")}),
    ("OUTPUT", "es"): dict(OUTPUT_COMMON, **{
        "!host": TEXT, "port": INT, "path": TEXT, "compress": enum("gzip"), "buffer_size": TEXT,
        "pipeline": TEXT, "http_user": TEXT, "http_passwd": TEXT, "cloud_id": TEXT, "cloud_auth": TEXT,
        "index": TEXT, "type": TEXT, "logstash_format": BOOL, "logstash_prefix": TEXT,
        "logstash_dateformat": TEXT, "time_key": TEXT, "time_key_format": TEXT, "time_key_nanos": BOOL,
        "include_tag_key": BOOL, "tag_key": TEXT, "generate_id": BOOL, "id_key": TEXT,
        "write_operation": enum("create", "index", "update", "upsert"), "replace_dots": BOOL,
        "trace_output": BOOL, "trace_error": BOOL, "current_time_index": BOOL, "suppress_type_name": BOOL,
        "tls": BOOL, "tls.verify": BOOL, "tls.ca_file": PATH, "tls.crt_file": PATH, "tls.key_file": PATH,
        "tls.vhost": TEXT,
    }),
}
PARSER = {"!name": TEXT, "!format": enum("json", "regex", "ltsv", "logfmt"), "regex": TEXT, "time_key": TEXT,
          "time_format": TEXT, "time_keep": BOOL, "time_offset": TEXT, "time_strict": BOOL, "types": TEXT,
          "skip_empty_values": BOOL}
REPEAT = {"parser", "set", "add", "remove", "remove_wildcard", "remove_regex", "rename", "hard_rename", "copy",
          "hard_copy", "condition", "regex", "exclude"}
# Arguments per entry for the keys that take several (`Rename old new`).
ARITY = {"rename": 2, "hard_rename": 2, "copy": 2, "hard_copy": 2, "set": 2, "add": 2, "regex": 2, "exclude": 2}
BUILTIN_MULTILINE = {"docker", "cri", "go", "python", "java", "ruby"}
VAR = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")


def _schema_for(s):
    if s.name == "SERVICE":
        return SERVICE
    if s.name == "PARSER":
        return PARSER
    name = (s.get("name") or "").lower()
    return PLUGINS.get((s.name, name))


def _check_entries(s, schema, variables, errors):
    allowed = {k.lstrip("!"): v for k, v in schema.items()}
    for k in schema:
        if k.startswith("!") and s.get(k[1:]) is None:
            errors.append(f"{s.where()}: {k[1:]} is required")
    seen = set()
    for k, v, line in s.entries:
        where = f"{s.path}:{line}"
        if k not in allowed:
            errors.append(f"{where}: unknown key {k} for {s.name} {s.get('name') or ''}".rstrip())
            continue
        if k in seen and k not in REPEAT:
            errors.append(f"{where}: {k} given twice")
        seen.add(k)
        missing = [m for m in VAR.findall(v) if m not in variables]
        if missing:
            errors.append(f"{where}: {k} uses undefined ${{{missing[0]}}}")
            continue
        value = VAR.sub(lambda m: variables[m.group(1)], v)
        if not allowed[k].fullmatch(value):
            errors.append(f"{where}: {k} {v!r} is not a valid value")
        if k in ARITY and len(value.split(None, ARITY[k] - 1)) != ARITY[k]:
            errors.append(f"{where}: {k} needs {ARITY[k]} arguments")


def _sample_tags(inp):
    """Tags a tail input gives its records: `*` in Tag is the file path with
    `/` turned into `.` (Fluent Bit's tail expansion)."""
    tag = inp.get("tag") or "tail.0"
    if "*" not in tag:
        return [tag]
    return [tag.replace("*", p.strip().lstrip("/").replace("/", ".").replace("*", "x"))
            for p in (inp.get("path") or "").split(",")]


def _matches(pattern, tag):
    return fnmatch.fnmatchcase(tag, pattern)


def fluentbit_time_format(fmt):
    """Fluent Bit's strptime format (with %L, fractional seconds) as Python's."""
    return fmt.replace("%L", "%f")


def check(text, path, files=None, env=None):
    """Errors of the configuration `text` (empty: valid)."""
    files = files or {}
    try:
        sections, variables = parse(text, path, files, env)
    except ConfError as e:
        return [str(e)]
    errors = []
    services = [s for s in sections if s.name == "SERVICE"]
    if len(services) != 1:
        errors.append(f"{path}: needs exactly one [SERVICE], has {len(services)}")
    parsers = {}
    for svc in services:
        pf = svc.get("parsers_file")
        if pf:
            if pf not in files:
                errors.append(f"{svc.where()}: Parsers_File {pf} is not provided")
            else:
                try:
                    psecs, _ = parse(files[pf], pf, files, variables)
                except ConfError as e:
                    errors.append(str(e))
                    psecs = []
                for p in psecs:
                    if p.name not in ("PARSER", "MULTILINE_PARSER"):
                        errors.append(f"{p.where()}: a parsers file holds only [PARSER] sections")
                        continue
                    sections.append(p)
        if svc.get("health_check") and is_on(svc.get("health_check")) and not is_on(svc.get("http_server", "off")):
            errors.append(f"{svc.where()}: Health_Check needs HTTP_Server On")
    for s in sections:
        schema = _schema_for(s)
        if schema is None:
            errors.append(f"{s.where()}: unknown plugin {s.get('name')!r} (the schema covers {sorted(n for _, n in PLUGINS)})")
            continue
        _check_entries(s, schema, variables, errors)
        if s.name == "PARSER":
            if s.get("name") in parsers:
                errors.append(f"{s.where()}: parser {s.get('name')} defined twice")
            parsers[s.get("name")] = s
            if (s.get("format") or "").lower() == "regex" and not s.get("regex"):
                errors.append(f"{s.where()}: a regex parser needs Regex")
    inputs = [s for s in sections if s.name == "INPUT"]
    outputs = [s for s in sections if s.name == "OUTPUT"]
    tags = [(i, t) for i in inputs for t in _sample_tags(i)]
    if not inputs or not outputs:
        errors.append(f"{path}: needs at least one [INPUT] and one [OUTPUT]")
    for s in sections:
        if s.name in ("FILTER", "OUTPUT"):
            m = s.get("match")
            if not m and not s.get("match_regex"):
                errors.append(f"{s.where()}: needs Match")
            elif m and not any(_matches(m, t) for _, t in tags):
                errors.append(f"{s.where()}: Match {m} matches no input's tag")
        for ref in s.all("parser") if s.name in ("INPUT", "FILTER") else []:
            if ref not in parsers:
                errors.append(f"{s.where()}: parser {ref} is not defined")
        if s.name == "INPUT" and s.get("multiline.parser"):
            for ref in s.get("multiline.parser").split(","):
                if ref.strip() not in BUILTIN_MULTILINE and ref.strip() not in parsers:
                    errors.append(f"{s.where()}: multiline parser {ref.strip()} is not defined")
        if s.name == "FILTER" and (s.get("name") or "").lower() == "kubernetes":
            prefix = s.get("kube_tag_prefix", "kube.var.log.containers.")
            for _, t in tags:
                if _matches(s.get("match") or "", t) and not t.startswith(prefix):
                    errors.append(f"{s.where()}: Kube_Tag_Prefix {prefix} is not a prefix of tag {t}")
        if s.name == "OUTPUT" and (s.get("name") or "").lower() == "es" and is_on(s.get("replace_dots", "off")):
            errors.append(f"{s.where()}: Replace_Dots On would rename the ECS fields (log.level -> log_level)")
    for i, t in tags:
        if not any(_matches(o.get("match") or "", t) for o in outputs):
            errors.append(f"{i.where()}: no [OUTPUT] matches tag {t}")
    return errors


def parsers_of(text, path, files=None, env=None):
    """Name -> [PARSER] section, from a configuration's Parsers_File."""
    sections, variables = parse(text, path, files, env)
    out = {}
    for svc in (s for s in sections if s.name == "SERVICE"):
        pf = svc.get("parsers_file")
        if pf in (files or {}):
            for p in parse(files[pf], pf, files, variables)[0]:
                out[p.get("name")] = p
    return out


def parses_time(parser, sample):
    """Whether `parser`'s Time_Format reads `sample`."""
    try:
        datetime.strptime(sample, fluentbit_time_format(parser.get("time_format") or ""))
        return True
    except ValueError:
        return False
