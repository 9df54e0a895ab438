#!/usr/bin/env python3
"""Renders the Helm chart the way `helm install` does, with no cluster: helm-sdkpy (Helm's
own Go library) installs it into a stand-in Kubernetes API server on loopback that answers
discovery for the kinds the chart uses, keeps what it is sent, and answers 404 for anything
it does not hold. Every object Helm creates is written to OUT_DIR as YAML, one file per
object, for kubernetes-validate and checkov (ops/scripts/check-helm.sh).

Usage: render_chart.py CHART_DIR OUT_DIR [VALUES_FILE]
Exits non-zero (with Helm's error) when the install fails: a template error, a value the
schema refuses, a kind the stand-in does not serve.
"""

import asyncio
import json
import os
import re
import sys
import tempfile
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import yaml

NAMESPACE = "orders"
RELEASE = "orders"

# group/version => [(plural, kind, namespaced)]
RESOURCES = {
    "v1": [
        ("namespaces", "Namespace", False),
        ("secrets", "Secret", True),
        ("configmaps", "ConfigMap", True),
        ("services", "Service", True),
        ("serviceaccounts", "ServiceAccount", True),
        ("pods", "Pod", True),
    ],
    "apps/v1": [("deployments", "Deployment", True)],
    "policy/v1": [("poddisruptionbudgets", "PodDisruptionBudget", True)],
    "networking.k8s.io/v1": [("ingresses", "Ingress", True), ("networkpolicies", "NetworkPolicy", True)],
    "autoscaling/v2": [("horizontalpodautoscalers", "HorizontalPodAutoscaler", True)],
    "keda.sh/v1alpha1": [
        ("scaledobjects", "ScaledObject", True),
        ("triggerauthentications", "TriggerAuthentication", True),
    ],
    "monitoring.coreos.com/v1": [
        ("servicemonitors", "ServiceMonitor", True),
        ("prometheusrules", "PrometheusRule", True),
    ],
}
KIND_OF = {(gv, plural): kind for gv, rs in RESOURCES.items() for plural, kind, _ in rs}


class StandIn(BaseHTTPRequestHandler):
    """A Kubernetes API server that only remembers: enough for `helm install`. Objects come
    as JSON (the chart's, through Helm's dynamic client) or as protobuf (Helm's release
    record, a Secret): each is kept as sent and answered as kept."""

    store = {}  # path => (content type, body bytes)
    created = []  # the JSON objects, in the order Helm created them
    lock = threading.Lock()

    def log_message(self, *_):
        pass

    def reply(self, code, body, content_type="application/json"):
        data = body if isinstance(body, bytes) else json.dumps(body).encode()
        self.send_response(code)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def not_found(self):
        self.reply(404, {"kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": "NotFound", "code": 404})

    def discovery(self, path):
        if path == "/version":
            return {"major": "1", "minor": "31", "gitVersion": "v1.31.0", "platform": "linux/amd64"}
        if path == "/api":
            return {"kind": "APIVersions", "versions": ["v1"], "serverAddressByClientCIDRs": []}
        if path == "/apis":
            groups = {}
            for gv in RESOURCES:
                if "/" in gv:
                    g, v = gv.split("/")
                    groups.setdefault(g, []).append({"groupVersion": gv, "version": v})
            return {
                "kind": "APIGroupList",
                "apiVersion": "v1",
                "groups": [{"name": g, "versions": vs, "preferredVersion": vs[0]} for g, vs in groups.items()],
            }
        m = re.fullmatch(r"/api/(v1)|/apis/([^/]+/[^/]+)", path)
        if m:
            gv = m.group(1) or m.group(2)
            if gv not in RESOURCES:
                return None
            verbs = ["create", "delete", "get", "list", "patch", "update", "watch"]
            return {
                "kind": "APIResourceList",
                "apiVersion": "v1",
                "groupVersion": gv,
                "resources": [
                    {"name": p, "singularName": "", "namespaced": ns, "kind": k, "verbs": verbs}
                    for p, k, ns in RESOURCES[gv]
                ],
            }
        return None

    def do_GET(self):
        path = self.path.split("?")[0]
        body = self.discovery(path)
        if body is not None:
            return self.reply(200, body)
        with self.lock:
            kept = self.store.get(path)
            if kept is not None:
                return self.reply(200, kept[1], kept[0])
            # A list: the JSON objects under this collection.
            items = [
                json.loads(b) for p, (t, b) in self.store.items() if p.rsplit("/", 1)[0] == path and "json" in t
            ]
        gv_plural = re.search(r"/(?:api/(v1)|apis/([^/]+/[^/]+))(?:/namespaces/[^/]+)?/([a-z]+)$", path)
        if gv_plural:
            return self.reply(200, {"kind": "List", "apiVersion": "v1", "metadata": {"resourceVersion": "1"}, "items": items})
        return self.not_found()

    def read_body(self):
        n = int(self.headers.get("Content-Length", "0"))
        return self.headers.get("Content-Type", "application/json"), self.rfile.read(n)

    def do_POST(self):
        path = self.path.split("?")[0]
        content_type, raw = self.read_body()
        if "json" in content_type:
            obj = json.loads(raw or b"{}")
            with self.lock:
                self.created.append(json.loads(json.dumps(obj)))  # as Helm sent it
            meta = obj.setdefault("metadata", {})
            meta.setdefault("uid", f"uid-{len(self.created)}")
            meta["resourceVersion"] = "1"
            raw = json.dumps(obj).encode()
            name = meta.get("name")
        else:  # protobuf: only Helm's release record; its name is in the bytes
            m = re.search(rb"sh\.helm\.release\.v1\.[a-z0-9.-]+?\.v[0-9]+", raw)
            name = m.group(0).decode() if m else f"object-{len(self.store)}"
        with self.lock:
            self.store[f"{path}/{name}"] = (content_type, raw)
        self.reply(201, raw, content_type)

    def do_PUT(self):
        path = self.path.split("?")[0]
        content_type, raw = self.read_body()
        with self.lock:
            self.store[path] = (content_type, raw)
        self.reply(200, raw, content_type)

    def do_PATCH(self):
        path = self.path.split("?")[0]
        self.read_body()
        with self.lock:
            kept = self.store.get(path)
        if kept is None:
            return self.not_found()
        self.reply(200, kept[1], kept[0])

    def do_DELETE(self):
        path = self.path.split("?")[0]
        with self.lock:
            kept = self.store.pop(path, None)
        return self.reply(200, kept[1], kept[0]) if kept is not None else self.not_found()


def main():
    if len(sys.argv) not in (3, 4):
        sys.exit(__doc__)
    chart, out = Path(sys.argv[1]).resolve(), Path(sys.argv[2])
    values = yaml.safe_load(Path(sys.argv[3]).read_text()) if len(sys.argv) == 4 else None
    server = ThreadingHTTPServer(("127.0.0.1", 0), StandIn)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    kubeconfig = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "stand-in", "cluster": {"server": f"http://127.0.0.1:{server.server_port}"}}],
        "users": [{"name": "stand-in", "user": {"token": "stand-in"}}],
        "contexts": [{"name": "stand-in", "context": {"cluster": "stand-in", "user": "stand-in", "namespace": NAMESPACE}}],
        "current-context": "stand-in",
    }
    with tempfile.TemporaryDirectory() as home:
        # Helm's caches and its release records stay out of the user's home.
        for var in ("HELM_CACHE_HOME", "HELM_CONFIG_HOME", "HELM_DATA_HOME"):
            os.environ[var] = os.path.join(home, var.lower())
        import helm_sdkpy as helm  # after the environment: the library reads it once

        config = helm.Configuration(namespace=NAMESPACE, kubeconfig=yaml.safe_dump(kubeconfig))
        try:
            asyncio.run(
                helm.Install(config).run(
                    RELEASE, str(chart), values=values, wait=False, timeout=60, disable_openapi_validation=True
                )
            )
        except helm.HelmError as e:
            sys.exit(f"render_chart: helm install failed: {e}")
    server.shutdown()
    out.mkdir(parents=True, exist_ok=True)
    written = 0
    for obj in StandIn.created:
        kind, name = obj.get("kind"), obj.get("metadata", {}).get("name")
        if kind == "Secret" and name.startswith("sh.helm.release."):
            continue  # Helm's own release record
        written += 1
        (out / f"{written:02d}-{kind.lower()}-{name}.yaml").write_text(yaml.safe_dump(obj, sort_keys=False))
    print(f"render_chart: {written} objects from {chart.name}" + (f" with {sys.argv[3]}" if values is not None else ""))
    return 0 if written else 1


if __name__ == "__main__":
    sys.exit(main())
