#!/usr/bin/env python3
"""Offline check of the ECS Terraform (ops/terraform-ecs) against the product contract.

No Terraform provider can be downloaded here, so `terraform validate` is out of reach.
Instead this parses every .tf file with python-hcl2 (8.x) and asserts what the contract
fixes: the Secrets Manager secrets (the two names and JSON keys operators already use, and
the api's tokens), the task definitions' `secrets` references and environment, the five
Fargate services with ECS exec, the ALB and its /healthz health check, who may reach it
(ingress CIDRs, HTTPS redirect, optional OIDC/Cognito sign-in with bearer tokens let
through to the api, optional WAF, optional access logs), the security groups, IAM, logs,
sensitive variables, and that no credential is written in the files. When a terraform
binary is on PATH it also runs `terraform fmt -check` (no provider needed).

Usage: check_terraform.py [TERRAFORM_DIR]   (run by ops/scripts/check-terraform.sh)
Prints one line per check and a summary "terraform contract: N passed, N failed".
"""

import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from check_report import Report

try:
    import hcl2
except ImportError:  # pragma: no cover - the shell wrapper installs it
    sys.exit("check_terraform.py: python-hcl2 is not installed (run ops/scripts/check-terraform.sh)")

ROLES = ["producer", "fraud", "payment", "analytics", "api", "ingest"]
STORE_ROLES = {"producer", "analytics", "api"}
API_PORT = 8000
OPS_PORT = 9100

SECRETS = {  # secret name => {json key: variable}
    "confluent-credentials": {
        "bootstrap_servers": "confluent_bootstrap_servers",
        "api_key": "confluent_api_key",
        "api_secret": "confluent_api_secret",
    },
    "couchbase-credentials": {
        "host": "couchbase_host",
        "bucket": "couchbase_bucket",
        "username": "couchbase_username",
        "password": "couchbase_password",
    },
    "orders-api-tokens": {
        "tokens": "api_tokens",
        "console_token": "api_console_token",
    },
    "postgres-credentials": {
        "url": "postgres_url",
    },
}
KAFKA_ENV = {  # env var => (secret name, json key); every service
    "KAFKA_BOOTSTRAP_SERVERS": ("confluent-credentials", "bootstrap_servers"),
    "CONFLUENT_API_KEY": ("confluent-credentials", "api_key"),
    "CONFLUENT_API_SECRET": ("confluent-credentials", "api_secret"),
}
STORE_ENV = {  # env var => (secret name, json key); producer, analytics, api
    "COUCHBASE_HOST": ("couchbase-credentials", "host"),
    "COUCHBASE_BUCKET": ("couchbase-credentials", "bucket"),
    "COUCHBASE_USERNAME": ("couchbase-credentials", "username"),
    "COUCHBASE_PASSWORD": ("couchbase-credentials", "password"),
}
API_ENV = {  # env var => (secret name, json key); the api only
    "ORDERS_API_TOKENS": ("orders-api-tokens", "tokens"),
    "ORDERS_API_TOKEN": ("orders-api-tokens", "console_token"),
}
INGEST_ENV = {  # env var => (secret name, json key); the ingest only
    "POSTGRES_URL": ("postgres-credentials", "url"),
}
EXEC_ACTIONS = {
    "ssmmessages:CreateControlChannel",
    "ssmmessages:CreateDataChannel",
    "ssmmessages:OpenControlChannel",
    "ssmmessages:OpenDataChannel",
}
# Liveness of every role (the api too) through its ops port.
DAEMON_HEALTH_COMMAND = ["CMD", "ordersd", "healthcheck"]
SENSITIVE_NAME = re.compile(r"secret|password|api_key|token")
PLACEHOLDER = re.compile(r"^(|<[^>]*>|(change|replace)[-_ ]?me.*|x{3,}|\.\.\.)$", re.IGNORECASE)


# ---------------------------------------------------------------------------------------
# python-hcl2 8.x output helpers: literal strings keep their quotes ("\"FARGATE\""),
# expressions come as "${...}", keys and block labels may be quoted.


def unquote(s):
    if isinstance(s, str) and len(s) >= 2 and s[0] == '"' and s[-1] == '"':
        try:
            return json.loads(s)
        except ValueError:
            return s[1:-1]
    return s


def expr(v):
    """The expression text of "${...}" (or the value itself)."""
    if isinstance(v, str) and v.startswith("${") and v.endswith("}"):
        return v[2:-1].strip()
    return v


def normalize(node):
    """Strip quotes from keys and drop python-hcl2's bookkeeping entries."""
    if isinstance(node, dict):
        return {unquote(k): normalize(v) for k, v in node.items() if not (k.startswith("__") and k.endswith("__"))}
    if isinstance(node, list):
        return [normalize(v) for v in node]
    return node


def strings(node):
    """Every string in a parsed tree (values only)."""
    if isinstance(node, dict):
        for v in node.values():
            yield from strings(v)
    elif isinstance(node, list):
        for v in node:
            yield from strings(v)
    elif isinstance(node, str):
        yield node


def interpolations(s):
    """The expression parts of a value: the whole "${...}" or each ${...} in a template."""
    if not isinstance(s, str):
        return []
    if s.startswith("${") and s.endswith("}"):
        return [s[2:-1]]
    out, i = [], 0
    while True:
        start = s.find("${", i)
        if start < 0:
            return out
        depth, j = 0, start + 1
        while j < len(s):
            if s[j] == "{":
                depth += 1
            elif s[j] == "}":
                depth -= 1
                if depth == 0:
                    break
            j += 1
        out.append(s[start + 2 : j])
        i = j + 1


def split_top(text, sep=","):
    """Split at top-level separators (outside brackets and quotes)."""
    parts, depth, quote, cur = [], 0, False, ""
    i = 0
    while i < len(text):
        c = text[i]
        if quote:
            cur += c
            if c == "\\" and i + 1 < len(text):
                cur += text[i + 1]
                i += 1
            elif c == '"':
                quote = False
        elif c == '"':
            quote = True
            cur += c
        elif c in "([{":
            depth += 1
            cur += c
        elif c in ")]}":
            depth -= 1
            cur += c
        elif c == sep and depth == 0:
            parts.append(cur.strip())
            cur = ""
        else:
            cur += c
        i += 1
    if cur.strip():
        parts.append(cur.strip())
    return parts


def object_literal(text):
    """{a = x, b = y} (as python-hcl2 prints an object in an expression) => {"a": "x", ...}."""
    text = text.strip()
    if not (text.startswith("{") and text.endswith("}")):
        return None
    out = {}
    for part in split_top(text[1:-1]):
        key, _, value = part.partition("=")
        out[unquote(key.strip())] = value.strip()
    return out


def dynamic_blocks(body, name):
    """The `dynamic "<name>"` blocks of a body, as [(for_each expression, content)]."""
    out = []
    for entry in body.get("dynamic", []) or []:
        for label, block in (entry or {}).items():
            if label == name:
                out.append((str(expr(block.get("for_each", ""))), first(block.get("content"))))
    return out


def first(block):
    """A nested block (a list of one dict) => the dict."""
    if isinstance(block, list) and block and isinstance(block[0], dict):
        return block[0]
    return block if isinstance(block, dict) else {}


# ---------------------------------------------------------------------------------------
# the configuration


class Config:
    def __init__(self, root, report):
        self.root = root
        self.resources = {}  # type => {name: body}
        self.data = {}
        self.variables = {}
        self.outputs = {}
        self.locals = {}
        self.terraform = []
        self.files = {}  # file name => raw text
        self.parsed = {}  # file name => normalized tree
        for path in sorted(root.glob("*.tf")):
            text = path.read_text(encoding="utf-8")
            self.files[path.name] = text
            try:
                tree = normalize(hcl2.loads(text))
            except Exception as e:  # noqa: BLE001 - any parse error fails the file
                report.check(
                    False, f"{path.name} parses", f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"
                )
                continue
            report.check(True, f"{path.name} parses")
            self.parsed[path.name] = tree
            for entry in tree.get("resource", []):
                for rtype, named in entry.items():
                    self.resources.setdefault(rtype, {}).update(named)
            for entry in tree.get("data", []):
                for dtype, named in entry.items():
                    self.data.setdefault(dtype, {}).update(named)
            for entry in tree.get("variable", []):
                self.variables.update(entry)
            for entry in tree.get("output", []):
                self.outputs.update(entry)
            for entry in tree.get("locals", []):
                self.locals.update(entry)
            self.terraform.extend(tree.get("terraform", []))

    def res(self, rtype):
        return self.resources.get(rtype, {})

    def var_default(self, name):
        var = self.variables.get(name, {})
        return unquote(var["default"]) if "default" in var else None

    def resolve(self, value, extra=None):
        """Substitute var.X (its default) and local.X (scalar locals) in a value."""
        value = unquote(value) if isinstance(value, str) else value
        if not isinstance(value, str):
            return value

        def sub(m):
            ref = m.group(1).strip()
            if extra and ref in extra:
                return str(extra[ref])
            kind, _, name = ref.partition(".")
            if kind == "var" and name in self.variables:
                d = self.var_default(name)
                if isinstance(d, (str, int, float)) and not isinstance(d, bool):
                    return str(d)
            if kind == "local" and isinstance(self.locals.get(name), (str, int, float)):
                return str(unquote(self.locals[name]))
            return m.group(0)

        prev = None
        while prev != value:
            prev, value = value, re.sub(r"\$\{([A-Za-z0-9_.\[\]\"]+)\}", sub, value)
        if isinstance(value, str) and re.fullmatch(r"-?\d+", value):
            return int(value)
        return value

    def services_map(self, body):
        """The locals map a for_each resource iterates over, or None."""
        m = re.fullmatch(r"local\.(\w+)", str(expr(body.get("for_each", ""))))
        return self.locals.get(m.group(1)) if m else None


# ---------------------------------------------------------------------------------------
# checks


def check_versions(cfg, r):
    tf = first(cfg.terraform)
    r.check(
        unquote(tf.get("required_version", "")).replace(" ", "") == ">=1.11",
        "terraform required_version >= 1.11 (write-only attributes, ephemeral variables)",
        f"got {unquote(tf.get('required_version'))!r}",
    )
    aws = first(tf.get("required_providers", {})).get("aws", {})
    aws = object_literal(expr(aws)) if isinstance(aws, str) else aws
    aws = {k: unquote(v) for k, v in (aws or {}).items()}
    r.check(
        aws.get("source") == "hashicorp/aws" and aws.get("version", "").replace(" ", "") == "~>5.100",
        "aws provider hashicorp/aws ~> 5.100 (secret_string_wo)",
        f"got {aws}",
    )


def secret_resources(cfg, r):
    """{secret name: resource name} of the aws_secretsmanager_secret resources."""
    prefix = cfg.var_default("credentials_name_prefix")
    r.check(prefix == "", 'variable credentials_name_prefix exists with default ""', f"default {prefix!r}")
    names = {}
    for rname, body in cfg.res("aws_secretsmanager_secret").items():
        names[cfg.resolve(body.get("name", ""))] = rname
    r.check(
        set(names) == set(SECRETS),
        "exactly the secrets confluent-credentials, couchbase-credentials, orders-api-tokens and postgres-credentials",
        f"got {sorted(map(str, names))}",
    )
    return names


def check_secret_values(cfg, r, names):
    versions = cfg.res("aws_secretsmanager_secret_version")
    for secret, keys in SECRETS.items():
        rname = names.get(secret)
        body = next(
            (b for b in versions.values() if expr(b.get("secret_id")) == f"aws_secretsmanager_secret.{rname}.id"), None
        )
        what = f"{secret}: secret_string_wo (write-only) = jsonencode with exactly {', '.join(keys)}"
        if body is None:
            r.check(False, what, "no aws_secretsmanager_secret_version for it")
            continue
        m = re.fullmatch(r"jsonencode\((.*)\)", str(expr(body.get("secret_string_wo", ""))), re.S)
        obj = object_literal(m.group(1)) if m else None
        if not r.check(
            obj is not None
            and set(obj) == set(keys)
            and "secret_string" not in body
            and expr(body.get("secret_string_wo_version")) == "var.credentials_version",
            what + ", versioned by var.credentials_version, no secret_string (kept in state)",
            f"got {sorted(obj) if obj else body.get('secret_string_wo')}",
        ):
            continue
        wrong = {k: v for k, v in obj.items() if v != f"var.{keys[k]}"}
        r.check(
            not wrong,
            f"{secret}: every value comes from its variable (var.{', var.'.join(keys.values())})",
            f"literal or other values: {wrong}",
        )
    r.check(
        cfg.var_default("couchbase_bucket") == "order_analytics",
        "variable couchbase_bucket defaults to order_analytics",
        f"default {cfg.var_default('couchbase_bucket')!r}",
    )


def check_sensitive(cfg, r):
    flagged = [n for n in cfg.variables if SENSITIVE_NAME.search(n)]
    loose = [n for n in flagged if cfg.variables[n].get("sensitive") is not True]
    r.check(
        flagged and not loose,
        f"every variable named *secret*/*password*/*api_key* is sensitive ({len(flagged)})",
        f"not sensitive: {loose}",
    )
    creds = [v for keys in SECRETS.values() for v in keys.values() if v != "couchbase_bucket"]
    missing = [n for n in creds if n not in cfg.variables]
    r.check(not missing, "every credential variable is declared", f"missing: {missing}")
    for must in (
        "confluent_api_key",
        "confluent_api_secret",
        "couchbase_password",
        "api_tokens",
        "api_console_token",
        "oidc_client_secret",
    ):
        if must in cfg.variables:
            r.check(cfg.variables[must].get("sensitive") is True, f"variable {must} is sensitive")
    with_default = [
        n
        for n, v in cfg.variables.items()
        if v.get("sensitive") is True and unquote(v.get("default")) not in (None, "")
    ]
    r.check(not with_default, "no sensitive variable has a default value", f"defaults on: {with_default}")


def secret_maps(cfg):
    """Locals maps of ENV => "<secret arn>:<json key>::", as {local name: {env: (resource, key)}}."""
    out = {}
    for lname, value in cfg.locals.items():
        if not isinstance(value, dict) or not value:
            continue
        refs = {}
        for env, ref in value.items():
            m = re.fullmatch(r"\$\{aws_secretsmanager_secret\.(\w+)\.arn\}:(\w+)::", str(unquote(ref)))
            if not m:
                break
            refs[env] = (m.group(1), m.group(2))
        else:
            out[lname] = refs
    return out


def check_container_secrets(cfg, r, names, roles, defs_expr):
    by_resource = {v: k for k, v in names.items()}
    maps = secret_maps(cfg)
    found = {env: (lname, ref) for lname, refs in maps.items() for env, ref in refs.items()}
    for env, (secret, key) in {**KAFKA_ENV, **STORE_ENV, **API_ENV, **INGEST_ENV}.items():
        lname, (rname, got_key) = found.get(env, (None, (None, None)))
        r.check(
            lname is not None and by_resource.get(rname) == secret and got_key == key,
            f"container secret {env} <- {secret}:{key}",
            f"got {by_resource.get(rname, rname)}:{got_key}" if lname else "not found in the locals",
        )
    kafka_maps = {found[e][0] for e in KAFKA_ENV if e in found}
    store_maps = {found[e][0] for e in STORE_ENV if e in found}
    if len(kafka_maps) != 1 or len(store_maps) != 1 or kafka_maps == store_maps:
        r.check(
            False,
            "the Kafka and the Couchbase secrets are two separate locals maps",
            f"kafka in {kafka_maps}, couchbase in {store_maps}",
        )
        return
    kafka_map, store_map = kafka_maps.pop(), store_maps.pop()
    m = re.search(r"(\w+)\.(\w+)\s*\?\s*local\." + store_map + r"\b", defs_expr)
    r.check(
        f"local.{kafka_map}" in defs_expr and m is not None,
        f"container definitions: local.{kafka_map} for every service, local.{store_map} when the service's flag is set",
        "not referenced that way",
    )
    flag = m.group(2) if m else "store"
    got = {role for role in roles if roles[role].get(flag) is True}
    r.check(
        got == STORE_ROLES,
        "Couchbase secrets go to producer, analytics and api only (not fraud, payment)",
        f"services with {flag} = true: {sorted(got)}",
    )
    api_maps = {found[e][0] for e in API_ENV if e in found}
    api_map = next(iter(api_maps), None)
    r.check(
        len(api_maps) == 1
        and api_map not in (kafka_map, store_map)
        and re.search(r'\b\w+\s*==\s*"api"\s*\?\s*local\.' + str(api_map) + r"\b", defs_expr) is not None,
        "the api tokens (ORDERS_API_TOKENS, ORDERS_API_TOKEN) are a locals map of their own, given to the api only",
        f"maps {api_maps}",
    )
    ingest_maps = {found[e][0] for e in INGEST_ENV if e in found}
    ingest_map = next(iter(ingest_maps), None)
    r.check(
        len(ingest_maps) == 1
        and ingest_map not in (kafka_map, store_map, api_map)
        and re.search(r'\b\w+\s*==\s*"ingest"\s*\?\s*local\.' + str(ingest_map) + r"\b", defs_expr) is not None,
        "the database URL (POSTGRES_URL) is a locals map of its own, given to the ingest only",
        f"maps {ingest_maps}",
    )


def check_environment(cfg, r, roles, defs_expr):
    common = cfg.locals.get("common_env", {})
    r.check(
        bool(re.search(r"merge\(local\.common_env,\s*\w+\.env\)", defs_expr)),
        "container environment = merge(local.common_env, <service>.env)",
    )
    want = {
        ("*", "TOPIC_NAME"): "orders",
        ("*", "ORDERS_LOG_FORMAT"): "json",
        ("*", "RUST_LOG"): "info",
        ("producer", "SLEEP_SECONDS"): "2",
        ("payment", "PAYMENT_DELAY_MS"): "100",
        ("api", "ORDERS_API_ADDR"): f"0.0.0.0:{API_PORT}",
        ("api", "ORDERS_API_TRUST_FORWARDED_FOR"): "true",
    }
    if any("FRAUD_THRESHOLD" in s.get("env", {}) for s in roles.values()):
        want[("fraud", "FRAUD_THRESHOLD")] = "300"
    for (role, env), value in want.items():
        targets = ROLES if role == "*" else [role]
        bad = {}
        for t in targets:
            got = cfg.resolve({**common, **roles.get(t, {}).get("env", {})}.get(env))
            if str(got) != value:
                bad[t] = got
        r.check(
            not bad,
            f"environment {env}={value!r} on {'every service' if role == '*' else role} (by default)",
            f"got {bad}",
        )
    plain = {k for s in roles.values() for k in s.get("env", {})} | set(common)
    leaked = plain & (set(KAFKA_ENV) | set(STORE_ENV) | set(API_ENV) | set(INGEST_ENV) | {"ORDERS_API_AUTH"})
    r.check(
        not leaked,
        "no credential is a plain environment variable, and nothing opens the api (ORDERS_API_AUTH)",
        f"plain: {sorted(leaked)}",
    )


def check_ecs(cfg, r):
    clusters = cfg.res("aws_ecs_cluster")
    cluster = next(iter(clusters.values()), {})
    exec_config = json.dumps(dynamic_blocks(cluster, "configuration"), default=str)
    r.check(
        len(clusters) == 1
        and "execute_command_configuration" in exec_config
        and "OVERRIDE" in exec_config
        and "var.enable_execute_command" in exec_config,
        "one ECS cluster; with var.enable_execute_command its exec sessions are logged (OVERRIDE)",
    )

    services = cfg.res("aws_ecs_service")
    svc_name, svc = next(iter(services.items()), (None, {}))
    roles = cfg.services_map(svc) or {}
    r.check(
        len(services) == 1 and sorted(roles) == sorted(ROLES),
        "aws_ecs_service for_each over a locals map of exactly producer, fraud, payment, analytics, api, ingest",
        f"got {sorted(roles)}",
    )
    bad_cmd = {
        k: [unquote(c) for c in v.get("command", [])]
        for k, v in roles.items()
        if [unquote(c) for c in v.get("command", [])] != ["ordersd", k]
    }
    r.check(roles and not bad_cmd, 'each service runs ["ordersd", "<role>"]', f"got {bad_cmd}")
    r.check(
        cfg.resolve(roles.get("api", {}).get("port")) == API_PORT
        and all(roles[k].get("port") is None for k in roles if k != "api"),
        f"only the api has a container port, {API_PORT}",
    )
    r.check(
        expr(svc.get("enable_execute_command")) == "var.enable_execute_command"
        and cfg.var_default("enable_execute_command") is False,
        "every service: enable_execute_command = var.enable_execute_command, default false",
    )
    strategy = " ".join(strings(svc.get("capacity_provider_strategy", [])))
    r.check(unquote(svc.get("launch_type")) == "FARGATE" or "FARGATE" in strategy, "every service: launch type FARGATE")
    r.check(expr(svc.get("desired_count")) == "var.desired_count[each.key]", "desired count from var.desired_count")
    net = first(svc.get("network_configuration"))
    r.check(
        expr(net.get("subnets")) == "var.private_subnet_ids"
        and expr(net.get("assign_public_ip")) == "var.assign_public_ip",
        "tasks in var.private_subnet_ids with assign_public_ip = var.assign_public_ip",
    )
    lb = json.dumps(svc.get("dynamic", [])) + json.dumps(svc.get("load_balancer", []))
    r.check("aws_lb_target_group." in lb and "container_port" in lb, "the api service registers in the target group")

    tds = cfg.res("aws_ecs_task_definition")
    td = next(iter(tds.values()), {})
    r.check(len(tds) == 1 and cfg.services_map(td) is roles, "one task definition per service (same for_each)")
    r.check(
        [unquote(x) for x in td.get("requires_compatibilities", [])] == ["FARGATE"]
        and unquote(td.get("network_mode")) == "awsvpc",
        "task definitions: FARGATE, awsvpc",
    )
    cd = str(expr(td.get("container_definitions", "")))
    m = re.fullmatch(r"jsonencode\(local\.(\w+)\[each\.key\]\)", cd)
    r.check(m is not None, "container_definitions = jsonencode(local.<map>[each.key])", f"got {cd}")
    defs_expr = str(expr(cfg.locals.get(m.group(1), ""))) if m else ""
    for what, pattern in [
        ("image = var.image (one image for all)", r"\bimage\s*=\s*var\.image\b"),
        ("command = <service>.command", r"\bcommand\s*=\s*\w+\.command\b"),
        ("stopTimeout = 30", r"\bstopTimeout\s*=\s*30\b"),
        ("awslogs log driver", r'logDriver\s*=\s*"awslogs"'),
        ("awslogs-group is the service's log group", r"awslogs-group\s*=\s*aws_cloudwatch_log_group\.\w+\["),
        ("every container's health check, the api's too, = local.daemon_health_check (liveness)",
         r"healthCheck\s*=\s*local\.daemon_health_check\b"),
        ("essential = true (ECS replaces a task whose container turns unhealthy)", r"\bessential\s*=\s*true\b"),
        ("port mappings from <service>.port", r"containerPort\s*=\s*\w+\.port"),
        ("the ops port is mapped on every container", r"containerPort\s*=\s*local\.ops_port"),
    ]:
        r.check(bool(re.search(pattern, defs_expr)), f"container definitions: {what}")

    r.check(
        "api_health_check" not in cfg.locals,
        "no readiness health check for the api (an outage would recycle every api task)",
    )

    hc = cfg.locals.get("daemon_health_check", {})
    cmd = [cfg.resolve(c) for c in hc.get("command", [])]
    r.check(cmd == DAEMON_HEALTH_COMMAND, f"daemon health check command {DAEMON_HEALTH_COMMAND}", f"got {cmd}")
    r.check(
        all(isinstance(hc.get(k), int) and hc.get(k) > 0 for k in ("interval", "timeout", "retries", "startPeriod")),
        "daemon health check sets interval, timeout, retries and startPeriod",
        f"got {hc}",
    )

    var = cfg.variables.get("desired_count", {})
    defaults = dict(re.findall(r"(\w+)\s*=\s*optional\(number,\s*(\d+)\)", str(var.get("type", ""))))
    defaults.update({k: str(v) for k, v in (var.get("default") or {}).items()})
    ok = (
        defaults.get("producer") == "1"
        and defaults.get("api") == "2"
        and defaults.get("ingest") == "0"
        and all(defaults.get(k) in ("1", "2") for k in ("fraud", "payment", "analytics"))
    )
    r.check(ok, "desired count defaults: producer 1, api 2, consumers 1 or 2, ingest 0 (off)", f"got {defaults}")
    ingest = roles.get("ingest", {})
    r.check(
        (ingest.get("min_healthy_percent"), ingest.get("max_percent")) == (0, 100),
        "the ingest's old task stops before the new one starts (one reader per slot)",
        f"got {ingest.get('min_healthy_percent')}/{ingest.get('max_percent')}",
    )
    return roles, defs_expr, td


def check_iam(cfg, r, names, td):
    roles = cfg.res("aws_iam_role")
    exec_role = re.fullmatch(r"aws_iam_role\.(\w+)\.arn", str(expr(td.get("execution_role_arn", ""))))
    task_role = re.fullmatch(r"aws_iam_role\.(\w+)\.arn", str(expr(td.get("task_role_arn", ""))))
    if not r.check(
        exec_role
        and task_role
        and exec_role.group(1) in roles
        and task_role.group(1) in roles
        and exec_role.group(1) != task_role.group(1),
        "task definitions have an execution role and a separate task role",
    ):
        return
    e, t = exec_role.group(1), task_role.group(1)

    def on_role(rtype, role):
        return [
            b
            for b in cfg.res(rtype).values()
            if re.fullmatch(rf"aws_iam_role\.{role}\.(name|id)", str(expr(b.get("role", ""))))
        ]

    arns = [unquote(b.get("policy_arn", "")) for b in on_role("aws_iam_role_policy_attachment", e)]
    r.check(
        any(a.endswith(":iam::aws:policy/service-role/AmazonECSTaskExecutionRolePolicy") for a in arns),
        "execution role has AmazonECSTaskExecutionRolePolicy",
        f"got {arns}",
    )
    want = {f"aws_secretsmanager_secret.{names.get(s)}.arn" for s in SECRETS}
    ok = False
    for body in on_role("aws_iam_role_policy", e):
        policy = str(expr(body.get("policy", "")))
        if "secretsmanager:GetSecretValue" in policy and "aws_secretsmanager_secret." in policy:
            got = set(re.findall(r"aws_secretsmanager_secret\.\w+\.arn", policy))
            ok = got == want and '"*"' not in policy
    r.check(ok, f"execution role: secretsmanager:GetSecretValue on exactly the {len(SECRETS)} secret ARNs")
    actions = set()
    for body in on_role("aws_iam_role_policy", t):
        actions |= set(re.findall(r"ssmmessages:\w+", str(body.get("policy", ""))))
    r.check(
        EXEC_ACTIONS <= actions,
        "task role allows the four ssmmessages actions of ECS exec",
        f"missing {sorted(EXEC_ACTIONS - actions)}",
    )
    assume = " ".join(str(roles[x].get("assume_role_policy", "")) for x in (e, t))
    docs = json.dumps(cfg.data.get("aws_iam_policy_document", {}))
    r.check("ecs-tasks.amazonaws.com" in assume + docs, "the roles are assumed by ecs-tasks.amazonaws.com")


def check_alb(cfg, r):
    lbs = cfg.res("aws_lb")
    lb_name, lb = next(iter(lbs.items()), (None, {}))
    r.check(
        len(lbs) == 1
        and lb.get("internal") is False
        and unquote(lb.get("load_balancer_type")) == "application"
        and expr(lb.get("subnets")) == "var.public_subnet_ids",
        "one internet-facing application load balancer in var.public_subnet_ids",
    )
    tgs = cfg.res("aws_lb_target_group")
    tg_name, tg = next(iter(tgs.items()), (None, {}))
    r.check(
        len(tgs) == 1
        and unquote(tg.get("target_type")) == "ip"
        and cfg.resolve(tg.get("port")) == API_PORT
        and unquote(tg.get("protocol")) == "HTTP",
        f"target group: ip, HTTP, port {API_PORT}",
    )
    hc = first(tg.get("health_check"))
    r.check(
        unquote(hc.get("path")) == "/healthz" and str(unquote(hc.get("matcher"))) == "200",
        "target group health check: /healthz, matcher 200",
        f"got {hc.get('path')} {hc.get('matcher')}",
    )
    listeners = cfg.res("aws_lb_listener")

    def forwards(body):
        act = first(body.get("default_action"))
        return (
            unquote(act.get("type")) == "forward"
            and expr(act.get("target_group_arn")) == f"aws_lb_target_group.{tg_name}.arn"
        )

    http = [b for b in listeners.values() if cfg.resolve(b.get("port")) == 80]
    actions = {content.get("type") and unquote(content.get("type")): (cond, content)
               for cond, content in dynamic_blocks(http[0], "default_action")} if len(http) == 1 else {}
    fwd_cond, fwd = actions.get("forward", ("", {}))
    red_cond, red = actions.get("redirect", ("", {}))
    redirect = first(red.get("redirect"))
    https_test = r"(local\.https|var\.certificate_arn\s*!=\s*\"\")\s*\?"
    r.check(
        len(http) == 1
        and unquote(http[0].get("protocol")) == "HTTP"
        and "default_action" not in http[0]
        and re.search(https_test + r"\s*\[\]\s*:", fwd_cond)
        and expr(fwd.get("target_group_arn")) == f"aws_lb_target_group.{tg_name}.arn"
        and re.search(https_test + r"\s*\[[^]]+\]\s*:\s*\[\]", red_cond)
        and (unquote(redirect.get("port")), unquote(redirect.get("protocol")), unquote(redirect.get("status_code")))
        == ("443", "HTTPS", "HTTP_301"),
        "listener on 80: forwards without a certificate, redirects to HTTPS (301) with one",
        f"got {sorted(actions)} {fwd_cond!r} {red_cond!r}",
    )
    https = [(n, b) for n, b in listeners.items() if cfg.resolve(b.get("port")) == 443]
    for _, b in https:
        r.check(
            "var.certificate_arn" in str(b.get("count", ""))
            and expr(b.get("certificate_arn")) == "var.certificate_arn"
            and forwards(b),
            "listener on 443: only with var.certificate_arn (count), forwards",
        )
    check_sign_in(cfg, r, https, tg_name, lb)
    return lb


def check_sign_in(cfg, r, https, tg_name, lb):
    """Optional OIDC or Cognito sign-in on the HTTPS listener; token holders pass to the api."""
    for var in ("oidc_sign_in", "cognito_sign_in"):
        v = cfg.variables.get(var, {})
        r.check(var in cfg.variables and v.get("default") is None and "default" in v,
                f"variable {var} exists, default null (sign-in off)")
    if not r.check(len(https) == 1, "one HTTPS listener"):
        return
    name, listener = https[0]
    kinds = {
        unquote(c.get("type")): (cond, c) for cond, c in dynamic_blocks(listener, "default_action")
    }
    oidc_cond, oidc = kinds.get("authenticate-oidc", ("", {}))
    oidc_cfg = first(oidc.get("authenticate_oidc"))
    r.check(
        "var.oidc_sign_in" in oidc_cond
        and cfg.resolve(oidc.get("order")) == 1
        and expr(oidc_cfg.get("client_secret")) == "var.oidc_client_secret"
        and unquote(oidc_cfg.get("on_unauthenticated_request")) == "authenticate"
        and all(k in oidc_cfg for k in ("issuer", "authorization_endpoint", "token_endpoint", "user_info_endpoint", "client_id")),
        "HTTPS listener: authenticate-oidc first when var.oidc_sign_in is set (client secret from var.oidc_client_secret)",
        f"got {oidc_cond!r} {sorted(oidc_cfg)}",
    )
    cog_cond, cog = kinds.get("authenticate-cognito", ("", {}))
    cog_cfg = first(cog.get("authenticate_cognito"))
    r.check(
        "var.cognito_sign_in" in cog_cond
        and cfg.resolve(cog.get("order")) == 1
        and all(k in cog_cfg for k in ("user_pool_arn", "user_pool_client_id", "user_pool_domain")),
        "HTTPS listener: authenticate-cognito first when var.cognito_sign_in is set",
    )
    fwd = first(listener.get("default_action"))
    r.check(cfg.resolve(fwd.get("order")) == 2, "HTTPS listener: forward after the sign-in (order 2)")
    rules = cfg.res("aws_lb_listener_rule").values()
    bearer = [
        x for x in rules
        if first(first(x.get("condition")).get("http_header")).get("http_header_name") in ('"Authorization"', "Authorization")
    ]
    ok = len(bearer) == 1
    if ok:
        b = bearer[0]
        header = first(first(b.get("condition")).get("http_header"))
        act = first(b.get("action"))
        ok = (
            [unquote(v) for v in header.get("values", [])] == ["Bearer *"]
            and expr(b.get("listener_arn")) == f"aws_lb_listener.{name}[0].arn"
            and "local.sign_in" in str(b.get("count", ""))
            and unquote(act.get("type")) == "forward"
            and expr(act.get("target_group_arn")) == f"aws_lb_target_group.{tg_name}.arn"
        )
    r.check(ok, "with sign-in, requests with Authorization: Bearer * skip it and go to the api (a listener rule)")
    conds = [str(expr(p.get("condition", ""))) for p in first(lb.get("lifecycle")).get("precondition", [])]
    r.check(
        any("local.sign_in" in c and "local.https" in c for c in conds),
        "sign-in needs a certificate (a precondition on the ALB)",
        f"preconditions {conds}",
    )
    env = cfg.locals.get("services", {}).get("api", {}).get("env", {})
    arn = str(expr(env.get("ORDERS_API_ALB_ARN", "")))
    r.check(
        re.fullmatch(r'local\.sign_in\s*\?\s*aws_lb\.\w+\.arn\s*:\s*""', arn) is not None
        and expr(env.get("ORDERS_API_OIDC_ISSUER")) == "local.sign_in_issuer",
        "with sign-in, the api verifies the ALB's identity header (ORDERS_API_ALB_ARN, ORDERS_API_OIDC_ISSUER)",
        f"got {arn!r} {env.get('ORDERS_API_OIDC_ISSUER')!r}",
    )
    issuer = str(expr(cfg.locals.get("sign_in_issuer", "")))
    r.check(
        "var.oidc_sign_in.issuer" in issuer and "cognito-idp." in issuer and "var.cognito_sign_in.user_pool_arn" in issuer,
        "the issuer the api checks: the OIDC provider's, or the Cognito user pool's",
    )
    r.check(
        unquote(lb.get("xff_header_processing_mode")) == "append",
        "the ALB appends the client to X-Forwarded-For (the api trusts its last entry only)",
    )


def check_waf(cfg, r, lb_name):
    v = cfg.variables.get("enable_waf", {})
    r.check(v.get("type") == "bool" and v.get("default") is True, "variable enable_waf, a bool, default true")
    acls = cfg.res("aws_wafv2_web_acl")
    name, acl = next(iter(acls.items()), (None, {}))
    rules = acl.get("rule", []) if isinstance(acl.get("rule"), list) else [acl.get("rule")]
    rate = [x for x in rules if first(first(x.get("statement")).get("rate_based_statement"))]
    managed = [
        first(first(x.get("statement")).get("managed_rule_group_statement"))
        for x in rules
        if first(first(x.get("statement")).get("managed_rule_group_statement"))
    ]
    rate_stmt = first(first(rate[0].get("statement")).get("rate_based_statement")) if rate else {}
    r.check(
        len(acls) == 1
        and str(expr(acl.get("count", ""))).startswith("var.enable_waf")
        and unquote(acl.get("scope")) == "REGIONAL",
        "one regional WAF web ACL, only with var.enable_waf",
    )
    r.check(
        bool(rate)
        and expr(rate_stmt.get("limit")) == "var.waf_rate_limit"
        and unquote(rate_stmt.get("aggregate_key_type")) == "IP"
        and "block" in first(rate[0].get("action")),
        "WAF: a rate-based rule per IP (var.waf_rate_limit) that blocks",
    )
    r.check(
        any(unquote(m.get("name")) == "AWSManagedRulesCommonRuleSet" and unquote(m.get("vendor_name")) == "AWS" for m in managed),
        "WAF: the AWS managed common rule set",
    )
    assoc = next(iter(cfg.res("aws_wafv2_web_acl_association").values()), {})
    r.check(
        expr(assoc.get("resource_arn")) == f"aws_lb.{lb_name}.arn"
        and expr(assoc.get("web_acl_arn")) == f"aws_wafv2_web_acl.{name}[0].arn"
        and str(expr(assoc.get("count", ""))).startswith("var.enable_waf"),
        "WAF web ACL associated with the ALB",
    )


def check_access_logs(cfg, r, lb):
    r.check(cfg.var_default("access_logs_bucket") == "", 'variable access_logs_bucket, default "" (off)')
    logs = dynamic_blocks(lb, "access_logs")
    cond, content = logs[0] if logs else ("", {})
    r.check(
        len(logs) == 1
        and "var.access_logs_bucket" in cond
        and content.get("enabled") is True
        and expr(content.get("bucket")) in ("access_logs.value", "var.access_logs_bucket"),
        "ALB access logs to var.access_logs_bucket, only when it is set",
    )


def check_security_groups(cfg, r, lb, svc_body):
    alb_sgs = set(re.findall(r"aws_security_group\.(\w+)\.id", str(lb.get("security_groups"))))
    task_sgs = set(re.findall(r"aws_security_group\.(\w+)\.id", json.dumps(svc_body.get("network_configuration"))))
    r.check(
        len(alb_sgs) == 1 and task_sgs and not alb_sgs & task_sgs,
        "the ALB and the tasks have their own security groups",
    )
    alb_sg = next(iter(alb_sgs), None)
    ingress = list(cfg.res("aws_vpc_security_group_ingress_rule").values())
    egress = list(cfg.res("aws_vpc_security_group_egress_rule").values())
    inline = [n for n, b in cfg.res("aws_security_group").items() if "ingress" in b or "egress" in b]
    inline += list(cfg.res("aws_security_group_rule"))
    r.check(
        not inline,
        "security group rules are aws_vpc_security_group_*_rule resources (what this check reads)",
        f"inline or legacy rules in {inline}",
    )

    def sg_of(rule):
        m = re.fullmatch(r"aws_security_group\.(\w+)\.id", str(expr(rule.get("security_group_id", ""))))
        return m.group(1) if m else None

    def ports(rule):
        return cfg.resolve(rule.get("from_port")), cfg.resolve(rule.get("to_port"))

    alb_rules = [x for x in ingress if sg_of(x) == alb_sg]
    alb_in = {ports(x)[0]: (unquote(x.get("cidr_ipv4")), str(expr(x.get("for_each", "")))) for x in alb_rules}
    r.check(
        set(alb_in) in ({80}, {80, 443})
        and len(alb_rules) == len(alb_in)
        and all(cidr == "${each.value}" and "var.ingress_cidrs" in each for cidr, each in alb_in.values())
        and ("var.certificate_arn" in alb_in.get(443, ("", "var.certificate_arn"))[1]),
        "ALB security group: 80 (and 443 with a certificate) from each of var.ingress_cidrs, nothing else",
        f"got {alb_in}",
    )
    v = cfg.variables.get("ingress_cidrs", {})
    r.check(
        [unquote(c) for c in cfg.var_default("ingress_cidrs") or []] == ["0.0.0.0/0"] and "validation" in v and "default" in str(v.get("description", "")).lower(),
        "variable ingress_cidrs: default [0.0.0.0/0], documented, validated",
        f"default {cfg.var_default('ingress_cidrs')}",
    )
    task_in = [x for x in ingress if sg_of(x) in task_sgs]

    def from_alb(x):
        return (
            ports(x) == (API_PORT, API_PORT)
            and expr(x.get("referenced_security_group_id")) == f"aws_security_group.{alb_sg}.id"
            and "cidr_ipv4" not in x
        )

    def from_scraper(x):
        each = str(expr(x.get("for_each", "")))
        by_group = "var.metrics_scraper_security_group_ids" in each and unquote(
            x.get("referenced_security_group_id")
        ) == "${each.value}"
        by_cidr = "var.metrics_scraper_cidrs" in each and unquote(x.get("cidr_ipv4")) == "${each.value}"
        return ports(x) == (OPS_PORT, OPS_PORT) and (by_group or by_cidr)

    r.check(
        task_in
        and any(from_alb(x) for x in task_in)
        and all(from_alb(x) or from_scraper(x) for x in task_in),
        f"task security groups: ingress only {API_PORT} from the ALB's group, and {OPS_PORT} "
        "(ops port) from each of var.metrics_scraper_security_group_ids / _cidrs",
        f"got {[(sg_of(x), ports(x)) for x in task_in]}",
    )
    r.check(
        cfg.var_default("metrics_scraper_security_group_ids") == []
        and cfg.var_default("metrics_scraper_cidrs") == [],
        "the ops port is closed by default (no scraper groups or ranges)",
    )
    r.check(
        any(
            sg_of(x) in task_sgs
            and unquote(x.get("ip_protocol")) == "-1"
            and unquote(x.get("cidr_ipv4")) == "0.0.0.0/0"
            for x in egress
        ),
        "task security group: all egress (Confluent Cloud, Couchbase Capella)",
    )


def check_network(cfg, r):
    missing = [
        v for v in ("vpc_id", "public_subnet_ids", "private_subnet_ids", "assign_public_ip") if v not in cfg.variables
    ]
    r.check(
        not missing,
        "network variables vpc_id, public_subnet_ids, private_subnet_ids, assign_public_ip",
        f"missing {missing}",
    )
    api = cfg.variables.get("assign_public_ip", {})
    r.check(api.get("type") == "bool" and api.get("default") is False, "assign_public_ip is a bool, default false")
    built = [
        t
        for t in ("aws_vpc", "aws_subnet", "aws_internet_gateway", "aws_nat_gateway", "aws_route_table")
        if t in cfg.resources
    ]
    r.check(not built, "no VPC is built (existing VPC and subnets only)", f"found {built}")


def check_logs(cfg, r, roles):
    groups = cfg.res("aws_cloudwatch_log_group")
    body = next((b for b in groups.values() if cfg.services_map(b) is roles), None)
    names = sorted(str(cfg.resolve(body.get("name"), {"each.key": k})) for k in roles) if body else []
    r.check(
        names == sorted(f"/ecs/orders/{k}" for k in ROLES),
        "a log group /ecs/orders/<service> per service",
        f"got {names}",
    )
    r.check(
        body is not None
        and expr(body.get("retention_in_days")) == "var.log_retention_days"
        and cfg.var_default("log_retention_days") == 30,
        "log retention from var.log_retention_days, default 30",
    )


def check_outputs(cfg, r):
    missing = [o for o in ("alb_dns_name", "cluster_name", "service_names", "exec_command") if o not in cfg.outputs]
    r.check(not missing, "outputs alb_dns_name, cluster_name, service_names, exec_command", f"missing {missing}")
    text = " ".join(unquote(s) for s in strings(cfg.outputs.get("exec_command", {})))
    text = cfg.resolve(text)
    for part in (
        "aws ecs execute-command",
        "--cluster",
        "--task",
        "--container api",
        "--interactive",
        f'--command \\"ordersctl tui --api http://127.0.0.1:{API_PORT}\\"',
    ):
        if part.replace("\\", "") not in text.replace("\\", ""):
            r.check(False, "exec_command output is a complete aws ecs execute-command", f"no {part!r}")
            return
    r.check(True, "exec_command output is a complete aws ecs execute-command")


def check_references(cfg, r):
    """Every var.X, local.X and resource/data reference names something declared."""
    declared_res = {f"{t}.{n}" for t, named in cfg.resources.items() for n in named}
    declared_data = {f"data.{t}.{n}" for t, named in cfg.data.items() for n in named}
    unknown = set()
    for tree in cfg.parsed.values():
        for s in strings(tree):
            for e in interpolations(s):
                e = re.sub(r'"(?:[^"\\]|\\.)*"', '""', e)  # string literals inside expressions
                unknown |= {f"var.{v}" for v in re.findall(r"\bvar\.(\w+)", e) if v not in cfg.variables}
                unknown |= {f"local.{v}" for v in re.findall(r"\blocal\.(\w+)", e) if v not in cfg.locals}
                unknown |= {f"data.{t}.{n}" for t, n in re.findall(r"\bdata\.(aws_\w+)\.(\w+)", e)} - declared_data
                unknown |= {f"{t}.{n}" for t, n in re.findall(r"(?<![\w.])(aws_\w+)\.(\w+)", e)} - declared_res
    r.check(not unknown, "every var., local., resource and data reference is declared", f"unknown: {sorted(unknown)}")


LEAKS = [
    (re.compile(r"AKIA[0-9A-Z]{16}"), "an AWS access key id"),
    (re.compile(r"-----BEGIN [A-Z ]*PRIVATE KEY"), "a private key"),
    (re.compile(r"couchbases?://[^\s/\"]+:[^\s@\"]+@"), "a connection string with a password"),
    (
        re.compile(r"\b(?:api_key|api_secret|password|secret)\w*\s*=\s*\"([^\"$]+)\"", re.IGNORECASE),
        "a credential literal",
    ),
]


def check_no_literal_secrets(cfg, r, tfvars):
    hits = []
    sources = dict(cfg.files)
    if tfvars.exists():
        sources[tfvars.name] = tfvars.read_text(encoding="utf-8")
    for name, text in sources.items():
        for lineno, line in enumerate(text.splitlines(), 1):
            if line.lstrip().startswith(("#", "//")):
                continue
            for pattern, what in LEAKS:
                m = pattern.search(line)
                if m and not (m.groups() and PLACEHOLDER.match(m.group(1).strip())):
                    hits.append(f"{name}:{lineno}: {what}")
    r.check(not hits, "no literal secret values in the .tf files or terraform.tfvars.example", "; ".join(hits))


def check_tfvars_example(cfg, r, path):
    if not r.check(path.exists(), f"{path.name} exists"):
        return
    try:
        values = normalize(hcl2.loads(path.read_text(encoding="utf-8")))
    except Exception as e:  # noqa: BLE001
        r.check(False, f"{path.name} parses", str(e).splitlines()[0] if str(e) else type(e).__name__)
        return
    unknown = [k for k in values if k not in cfg.variables]
    r.check(not unknown, f"{path.name} sets only declared variables", f"unknown: {unknown}")
    real = [
        k
        for k, v in values.items()
        if cfg.variables.get(k, {}).get("sensitive") is True and not PLACEHOLDER.match(str(unquote(v)))
    ]
    r.check(not real, f"{path.name} holds no value for a sensitive variable (placeholders only)", f"set: {real}")


def check_fmt(root, r):
    tf = shutil.which("terraform")
    if not tf:
        r.skip("terraform fmt -check", "no terraform binary on PATH")
        return
    env = dict(os.environ)
    if env.get("TF_CLI_CONFIG_FILE") and not Path(env["TF_CLI_CONFIG_FILE"]).exists():
        env.pop("TF_CLI_CONFIG_FILE")  # a dangling setting only adds a warning
    with tempfile.TemporaryDirectory() as tmp:
        targets = [str(root)]
        example = root / "terraform.tfvars.example"
        if example.exists():  # fmt reads .tfvars only by that suffix
            shutil.copy(example, Path(tmp) / "terraform.tfvars.example.tfvars")
            targets.append(str(Path(tmp) / "terraform.tfvars.example.tfvars"))
        try:
            p = subprocess.run(
                [tf, "fmt", "-no-color", "-check", "-list=true", *targets],
                capture_output=True,
                text=True,
                timeout=60,
                env=env,
            )
        except (OSError, subprocess.TimeoutExpired) as e:
            r.check(False, "terraform fmt -check", str(e))
            return
    files = [Path(x).name.replace(".example.tfvars", ".example") for x in p.stdout.split()]
    r.check(
        p.returncode == 0,
        "terraform fmt -check (the .tf files and terraform.tfvars.example)",
        f"not formatted: {files} (run terraform fmt)" if files else p.stderr.strip()[-300:],
    )


def guarded(r, fn, *args, default=None):
    """Run one group of checks; a crash (e.g. an unexpected shape) is a failure, not a traceback."""
    try:
        return fn(*args)
    except Exception as e:  # noqa: BLE001
        r.check(False, f"{fn.__name__} ran", f"{type(e).__name__}: {e}")
        return default


def main():
    here = Path(__file__).resolve().parent
    root = Path(sys.argv[1]).resolve() if len(sys.argv) > 1 else here.parent / "terraform-ecs"
    r = Report()
    if not sorted(root.glob("*.tf")):
        r.check(False, f"Terraform files in {root}", "none found")
    else:
        cfg = Config(root, r)
        tfvars = root / "terraform.tfvars.example"
        guarded(r, check_versions, cfg, r)
        names = guarded(r, secret_resources, cfg, r, default={})
        guarded(r, check_secret_values, cfg, r, names)
        guarded(r, check_sensitive, cfg, r)
        roles, defs_expr, td = guarded(r, check_ecs, cfg, r, default=({}, "", {}))
        guarded(r, check_container_secrets, cfg, r, names, roles, defs_expr)
        guarded(r, check_environment, cfg, r, roles, defs_expr)
        guarded(r, check_iam, cfg, r, names, td)
        lb = guarded(r, check_alb, cfg, r, default={})
        guarded(r, check_waf, cfg, r, next(iter(cfg.res("aws_lb")), None))
        guarded(r, check_access_logs, cfg, r, lb)
        service = next(iter(cfg.res("aws_ecs_service").values()), {})
        guarded(r, check_security_groups, cfg, r, lb, service)
        guarded(r, check_network, cfg, r)
        guarded(r, check_logs, cfg, r, roles)
        guarded(r, check_outputs, cfg, r)
        guarded(r, check_references, cfg, r)
        guarded(r, check_no_literal_secrets, cfg, r, tfvars)
        guarded(r, check_tfvars_example, cfg, r, tfvars)
    guarded(r, check_fmt, root, r)
    summary = f"terraform contract: {r.passed} passed, {r.failed} failed"
    print(summary + (f", {r.skipped} skipped" if r.skipped else ""))
    return 1 if r.failed else 0


if __name__ == "__main__":
    sys.exit(main())
