#!/usr/bin/env python3
"""Checks the Helm chart ops/helm/orders and the ArgoCD Application (run by check-helm.sh,
inside its virtualenv with helm-sdkpy, kubernetes-validate, checkov and PyYAML).

For the chart's defaults and every ops/helm/orders/ci/*-values.yaml:
- `helm lint` (helm-sdkpy's Lint: renders every template, checks values.schema.json);
- `helm install` into a stand-in API server (render_chart.py), the objects kept as YAML;
- kubernetes-validate --strict of every object against the Kubernetes schemas of the
  oldest and newest version the chart supports (KEDA's and the Prometheus Operator's kinds
  have no schema there: they are checked below);
- what the chart promises: the producer's Recreate strategy and at most one replica,
  liveness /healthz and readiness /readyz on the ops port, the security context, KEDA
  capped at the partitions, the PrometheusRule equal to ops/observability/alerts.yml (and
  `promtool check rules` on it when promtool is there), the ServiceMonitor's job names.
Then checkov over every rendered object (each skip carries its reason in the manifest),
values the schema must refuse, and the ArgoCD Application's shape.

Usage: check_chart.py REPO_ROOT WORK_DIR
Prints one line per check and "helm check: N passed, N failed".
"""

import asyncio
import copy
import re
import shutil
import subprocess
import sys
from pathlib import Path

import yaml

from check_report import Report

KUBE_VERSIONS = ["1.27.0", "1.37.0"]
ROLES = ["producer", "fraud", "payment", "analytics", "api", "ingest"]


def merge(base, over):
    out = copy.deepcopy(base)
    for k, v in (over or {}).items():
        out[k] = merge(out.get(k, {}), v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def lint(chart, values, work):
    """helm lint of the chart with `values` as its values.yaml: (ok, messages)."""
    import helm_sdkpy as helm

    copy_dir = work / "lint-chart"
    shutil.rmtree(copy_dir, ignore_errors=True)
    shutil.copytree(chart, copy_dir)
    (copy_dir / "values.yaml").write_text(yaml.safe_dump(values, sort_keys=False))
    result = asyncio.run(helm.Lint(helm.Configuration()).run(str(copy_dir)))
    # Severity: 1 info, 2 warning, 3 error.
    bad = [m for m in result.get("Messages") or [] if m.get("Severity", 0) >= 2]
    return not bad and not result.get("Errors"), bad


def render(here, chart, values_file, out):
    shutil.rmtree(out, ignore_errors=True)
    args = [sys.executable, str(here / "render_chart.py"), str(chart), str(out)]
    if values_file:
        args.append(str(values_file))
    p = subprocess.run(args, capture_output=True, text=True, timeout=300)
    return p.returncode == 0, (p.stdout + p.stderr).strip()


def load(out):
    return [yaml.safe_load(f.read_text()) for f in sorted(out.glob("*.yaml"))]


def container(dep):
    return dep["spec"]["template"]["spec"]["containers"][0]


def check_objects(r, name, objs, values, root, work):
    deps = {o["metadata"]["labels"]["app.kubernetes.io/component"]: o for o in objs if o["kind"] == "Deployment"}
    on = [role for role in ROLES if values[role]["enabled"]]
    r.check(sorted(deps) == sorted(on), f"{name}: one Deployment per enabled role", f"{sorted(deps)} vs {sorted(on)}")
    for role in ("producer", "ingest"):
        if role in deps:
            spec = deps[role]["spec"]
            r.check(
                spec["strategy"]["type"] == "Recreate" and spec.get("replicas") in (0, 1),
                f"{name}: {role} uses Recreate with at most one replica (the old pod is gone before the new starts)",
                spec.get("strategy"),
            )
    bad = []
    for role, dep in deps.items():
        c = container(dep)
        pod = dep["spec"]["template"]["spec"]
        sc = c.get("securityContext", {})
        if c["livenessProbe"]["httpGet"] != {"path": "/healthz", "port": "ops"}:
            bad.append(f"{role} liveness")
        if c["readinessProbe"]["httpGet"] != {"path": "/readyz", "port": "ops"}:
            bad.append(f"{role} readiness")
        if not (pod["securityContext"].get("runAsNonRoot") and sc.get("readOnlyRootFilesystem")
                and sc.get("allowPrivilegeEscalation") is False and sc.get("capabilities", {}).get("drop") == ["ALL"]):
            bad.append(f"{role} securityContext")
        if not c.get("resources", {}).get("limits") or not c.get("resources", {}).get("requests"):
            bad.append(f"{role} resources")
        if c["command"] != ["ordersd", role]:
            bad.append(f"{role} command")
        if not any(p["containerPort"] == 9100 and p["name"] == "ops" for p in c["ports"]):
            bad.append(f"{role} ops port")
        if {"name": "ORDERS_OPS_ADDR", "value": "0.0.0.0:9100"} not in c["env"]:
            bad.append(f"{role} ORDERS_OPS_ADDR")
        for e in c["env"]:
            if re.search(r"SECRET|PASSWORD|TOKEN|KEY|POSTGRES_URL", e["name"]) and "valueFrom" not in e:
                bad.append(f"{role} {e['name']} is not from a Secret")
    r.check(not bad, f"{name}: probes on the ops port, security context, resources, secrets from Secrets", bad)

    scaled = [o for o in objs if o["kind"] == "ScaledObject"]
    if values["autoscaling"]["enabled"]:
        cap = min(values["autoscaling"]["maxReplicas"], values["kafka"]["partitions"])
        consumers = [role for role in ("fraud", "payment", "analytics") if role in deps]
        groups = {"fraud": "fraud-group", "payment": "payments-group", "analytics": "analytics-group"}
        ok = len(scaled) == len(consumers) and all(
            s["spec"]["maxReplicaCount"] == cap
            and s["spec"]["triggers"][0]["type"] == "kafka"
            and s["spec"]["triggers"][0]["metadata"]["consumerGroup"] == groups[s["metadata"]["labels"]["app.kubernetes.io/component"]]
            and s["spec"]["triggers"][0]["metadata"]["topic"] == values["kafka"]["topic"]
            and s["spec"]["triggers"][0]["metadata"]["allowIdleConsumers"] == "false"
            for s in scaled
        )
        r.check(ok, f"{name}: a KEDA ScaledObject per consumer group on its lag, capped at {cap} (the partitions)")
        r.check(
            all("replicas" not in deps[c]["spec"] for c in consumers),
            f"{name}: autoscaled Deployments leave replicas to KEDA",
        )
    else:
        r.check(not scaled, f"{name}: no ScaledObject without autoscaling")

    rules = [o for o in objs if o["kind"] == "PrometheusRule"]
    if values["metrics"]["prometheusRule"]["enabled"]:
        source = (root / "ops" / "observability" / "alerts.yml").read_text()
        base = values["metrics"]["prometheusRule"]["runbookBaseUrl"]
        expected = yaml.safe_load(source.replace('runbook_url: "docs/', f'runbook_url: "{base}docs/'))["groups"]
        r.check(
            len(rules) == 1 and rules[0]["spec"]["groups"] == expected,
            f"{name}: the PrometheusRule is ops/observability/alerts.yml (runbook links prefixed)",
        )
        if rules and shutil.which("promtool"):
            f = work / f"{name}-rules.yml"
            f.write_text(yaml.safe_dump({"groups": rules[0]["spec"]["groups"]}))
            p = subprocess.run(["promtool", "check", "rules", str(f)], capture_output=True, text=True)
            r.check(p.returncode == 0, f"{name}: promtool check rules accepts the PrometheusRule's rules", p.stdout + p.stderr)
    monitors = [o for o in objs if o["kind"] == "ServiceMonitor"]
    if values["metrics"]["serviceMonitor"]["enabled"]:
        services = [o for o in objs if o["kind"] == "Service"]
        selector = monitors[0]["spec"]["selector"]["matchLabels"] if monitors else {}
        picked = [s for s in services if all(s["metadata"]["labels"].get(k) == v for k, v in selector.items())]
        relabel = monitors[0]["spec"]["endpoints"][0]["relabelings"][0] if monitors else {}
        r.check(
            len(monitors) == 1
            and len(picked) == len(deps)
            and all(any(p["name"] == "ops" and p["port"] == 9100 for p in s["spec"]["ports"]) for s in picked)
            and relabel.get("targetLabel") == "job"
            and relabel.get("replacement") == "orders-$1",
            f"{name}: the ServiceMonitor scrapes every role's ops port as job orders-<role>",
        )


def kube_validate(r, name, out):
    files = [str(f) for f in sorted(out.glob("*.yaml"))]
    for version in KUBE_VERSIONS:
        p = subprocess.run(
            ["kubernetes-validate", "-k", version, "--strict", "--quiet", "--no-warn", *files],
            capture_output=True,
            text=True,
        )
        r.check(p.returncode == 0, f"{name}: kubernetes-validate --strict, Kubernetes {version}", p.stdout + p.stderr)


def checkov(r, dirs):
    p = subprocess.run(
        ["checkov", "--framework", "kubernetes", "--quiet", "--compact", "--skip-download", "-o", "cli",
         *[a for d in dirs for a in ("-d", str(d))]],
        capture_output=True,
        text=True,
    )
    counts = re.findall(r"Passed checks: (\d+), Failed checks: (\d+), Skipped checks: (\d+)", p.stdout)
    failed = sum(int(c[1]) for c in counts)
    r.check(
        p.returncode == 0 and counts and failed == 0,
        f"checkov (kubernetes) over every rendered object: {counts[-1] if counts else None} (passed, failed, skipped with a reason in the manifest)",
        p.stdout + p.stderr,
    )


def refused(r, here, chart, work, what, override):
    f = work / "refused-values.yaml"
    f.write_text(yaml.safe_dump(override))
    ok, out = render(here, chart, f, work / "refused")
    r.check(not ok and "values don't meet the specifications of the schema" in out, f"the schema refuses {what}", out)


def check_argocd(r, root):
    app = yaml.safe_load((root / "ops" / "argocd" / "orders-application.yaml").read_text())
    src = app.get("spec", {}).get("source", {})
    chart = root / src.get("path", "missing")
    r.check(
        app.get("apiVersion") == "argoproj.io/v1alpha1"
        and app.get("kind") == "Application"
        and (chart / "Chart.yaml").is_file()
        and all((chart / v).is_file() for v in src.get("helm", {}).get("valueFiles", []))
        and app["spec"]["destination"].get("namespace")
        and app["spec"]["syncPolicy"]["automated"] == {"prune": True, "selfHeal": True},
        "ArgoCD Application: the chart's path and value files exist; automated sync with prune and self-heal",
    )


def main():
    root, work = Path(sys.argv[1]).resolve(), Path(sys.argv[2]).resolve()
    here = root / "ops" / "scripts"
    chart = root / "ops" / "helm" / "orders"
    r = Report(detail_tail=2000)
    defaults = yaml.safe_load((chart / "values.yaml").read_text())
    cases = [("defaults", None)] + [(f.name, f) for f in sorted((chart / "ci").glob("*-values.yaml"))]
    rendered = []
    for name, values_file in cases:
        values = merge(defaults, yaml.safe_load(values_file.read_text()) if values_file else {})
        ok, bad = lint(chart, values, work)
        r.check(ok, f"{name}: helm lint (every template rendered, values.schema.json)", bad)
        out = work / "rendered" / name
        ok, log = render(here, chart, values_file, out)
        if not r.check(ok, f"{name}: helm install into a stand-in API server", log):
            continue
        rendered.append(out)
        kube_validate(r, name, out)
        check_objects(r, name, load(out), values, root, work)
    if rendered:
        checkov(r, rendered)
    refused(r, here, chart, work, "two producers", {"producer": {"replicas": 2}})
    refused(r, here, chart, work, "the :latest tag", {"image": {"tag": "latest"}})
    refused(r, here, chart, work, "an unknown value", {"fraud": {"replica": 2}})
    check_argocd(r, root)
    print(f"helm check: {r.passed} passed, {r.failed} failed")
    return 1 if r.failed else 0


if __name__ == "__main__":
    sys.exit(main())
