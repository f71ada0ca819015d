"""Reads a Prometheus text exposition on stdin with prometheus_client's
parser and prints one JSON line per family: {"family", "type", "samples":
[{"name", "labels", "value"}]}. Exits 1 (with the parser's message) on text it rejects,
or when a family has no HELP or TYPE line.

Used by tests/server_metrics.rs, so that GET /metrics is read by the
reference client's own parser, not by the test's.
"""
import json
import sys

from prometheus_client.parser import text_string_to_metric_families


def main():
    text = sys.stdin.read()
    try:
        families = list(text_string_to_metric_families(text))
    except Exception as e:  # the parser raises ValueError and others
        print(f"parse error: {e}", file=sys.stderr)
        return 1
    typed = {line.split()[2] for line in text.splitlines() if line.startswith("# TYPE ")}
    helped = {line.split()[2] for line in text.splitlines() if line.startswith("# HELP ")}
    for family in families:
        if family.type == "unknown":
            print(f"family {family.name} has no TYPE line", file=sys.stderr)
            return 1
        print(json.dumps({
            "family": family.name,
            "type": family.type,
            "samples": [
                {"name": s.name, "labels": s.labels, "value": s.value}
                for s in family.samples
            ],
        }))
    if typed != helped:
        print(f"HELP and TYPE lines differ: {sorted(typed ^ helped)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
