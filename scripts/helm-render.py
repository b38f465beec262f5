#!/usr/bin/env python3
"""Renders and lints a chart with the real Helm 4 engine (helm-python-sdk embeds Helm's Go SDK: no helm binary).

Usage: helm-render.py CHART [VALUES.yaml ...]

Prints one JSON document: {"lint": <helm lint --strict report>, "manifests": {template path: rendered text, NOTES.txt
included}, "objects": [every rendered object, parsed by Helm's own YAML reader]}. A chart or values error exits 1
with Helm's message on stderr.
Values files are merged in order, as `helm template -f a.yaml -f b.yaml` merges them.
"""
import json
import sys

import helm_python as helm


def main() -> int:
    chart_dir, value_files = sys.argv[1], sys.argv[2:]
    values: dict = {}
    for path in value_files:
        with open(path, encoding="utf-8") as f:
            values = merge(values, helm.values_from_yaml(f.read()))
    chart = helm.Chart.load(chart_dir)
    chart.validate_schema(values)
    report = helm.lint(chart_dir, values, strict=True, kube_version="v1.33.0")
    manifests = chart.render(values, name="appdb-operator", namespace="appdb-system", is_install=True)
    objects = []
    for path in sorted(manifests):
        if path.endswith("NOTES.txt"):
            continue
        for document in manifests[path].split("\n---"):
            parsed = helm.values_from_yaml(document)
            if parsed:
                objects.append(parsed)
    json.dump({"lint": report, "manifests": manifests, "objects": objects}, sys.stdout)
    return 0


def merge(base: dict, overlay: dict) -> dict:
    out = dict(base)
    for key, value in overlay.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merge(out[key], value)
        else:
            out[key] = value
    return out


if __name__ == "__main__":
    try:
        sys.exit(main())
    except helm.errors.HelmError as e:
        # What `helm install` prints: the chart's own message (schema violations, `fail` in templates).
        print(f"Error: {e}", file=sys.stderr)
        sys.exit(1)
