#!/usr/bin/env python3
"""Checks of ops/observability beyond promtool's (run by .ci/run after `promtool test rules`).

- Every alert carries a runbook_url `docs/runbooks.md#<alert name, lowercase>` and
  docs/runbooks.md has a `## <AlertName>` section for it.
- Every alert has a promtool test in alerts.test.yml in which it fires (exp_alerts not empty).
- Every range in alerts.yml and dashboard.json is at least 4 minutes: a rate over fewer than
  two samples is empty, and the scrape interval may be 60 s (Amazon Managed Prometheus'
  collectors, many operators' defaults), so shorter windows go blank there.
- The Helm chart's copies (ops/helm/orders/files/alerts.yml, dashboard.json), from which it
  renders its PrometheusRule and dashboard ConfigMap, are identical to these files.

Standard library only. Usage: check_observability.py [REPO_ROOT]
Prints one line per check and "observability check: N passed, N failed".
"""

import json
import re
import sys
from pathlib import Path

MIN_RANGE_SECONDS = 240


def seconds(amount, unit):
    return int(amount) * {"s": 1, "m": 60, "h": 3600, "d": 86400}[unit]


def alert_blocks(text):
    """[(alert name, the rule's text)] in file order."""
    starts = [(m.start(), m.group(1)) for m in re.finditer(r"^\s*- alert: (\w+)\s*$", text, re.M)]
    ends = [s for s, _ in starts[1:]] + [len(text)]
    return [(name, text[s:e]) for (s, name), e in zip(starts, ends)]


def fired_in_tests(test_text):
    """Alert names some test expects to fire: an alertname followed by a non-empty exp_alerts."""
    fired = set()
    for m in re.finditer(r"alertname: (\w+)\s*\n\s*exp_alerts:(.*)\n", test_text):
        if m.group(2).strip() != "[]":
            fired.add(m.group(1))
    return fired


def main():
    root = Path(sys.argv[1]) if len(sys.argv) > 1 else Path(__file__).resolve().parents[2]
    obs = root / "ops" / "observability"
    passed = failed = 0

    def check(ok, what, detail=""):
        nonlocal passed, failed
        if ok:
            passed += 1
            print(f"ok   - {what}")
        else:
            failed += 1
            print(f"FAIL - {what}" + (f": {detail}" if detail else ""))

    alerts = (obs / "alerts.yml").read_text(encoding="utf-8")
    tests = (obs / "alerts.test.yml").read_text(encoding="utf-8")
    dashboard = (obs / "dashboard.json").read_text(encoding="utf-8")
    runbooks = (root / "docs" / "runbooks.md").read_text(encoding="utf-8")
    sections = set(re.findall(r"^## (\w+)\s*$", runbooks, re.M))
    fired = fired_in_tests(tests)
    blocks = alert_blocks(alerts)
    check(len(blocks) >= 10, f"alerts.yml has its rules ({len(blocks)})")
    for name, block in blocks:
        url = re.search(r'runbook_url: "([^"]*)"', block)
        check(
            url is not None and url.group(1) == f"docs/runbooks.md#{name.lower()}" and name in sections,
            f"{name}: runbook_url docs/runbooks.md#{name.lower()}, and that section exists",
            f"url {url.group(1) if url else None}, section {'found' if name in sections else 'missing'}",
        )
        check(name in fired, f"{name}: a promtool test in which it fires")

    exprs = [e for p in json.loads(dashboard).get("panels", []) for e in (t.get("expr", "") for t in p.get("targets", []))]
    check(len(exprs) >= 10, f"dashboard.json has its queries ({len(exprs)})")
    short = []
    for where, text in [("alerts.yml", alerts), ("dashboard.json", "\n".join(exprs))]:
        for m in re.finditer(r"\[(\d+)([smhd])(?::\d*[smhd]?)?\]", text):
            if seconds(m.group(1), m.group(2)) < MIN_RANGE_SECONDS:
                short.append(f"{where}: {m.group(0)}")
        short += [f"{where}: {m.group(0)}" for m in re.finditer(r"\$__(rate_)?interval", text)]
    check(not short, "every range is at least 4m and fixed (enough samples at a 60 s scrape interval)", ", ".join(short))

    chart_files = root / "ops" / "helm" / "orders" / "files"
    for name in ["alerts.yml", "dashboard.json"]:
        copy = chart_files / name
        check(
            copy.is_file() and copy.read_bytes() == (obs / name).read_bytes(),
            f"ops/helm/orders/files/{name} is identical to ops/observability/{name}",
            "differs or missing (cp ops/observability/{0} ops/helm/orders/files/{0})".format(name),
        )

    print(f"observability check: {passed} passed, {failed} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
