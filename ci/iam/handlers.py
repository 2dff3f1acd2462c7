"""Generates ci/iam/handler-permissions.json (and ci/iam/create-only-properties.json, which the
pull-request review reads to flag replacements) from the resource provider schemas cfn-lint ships.

Run it through `ci/iam-handlers` (which picks the venv of ci/requirements.txt). The resource types
are those of every golden stack (golden/*/expected/stacks/*.json) and bootstrap stack
(golden-bootstrap/*/expected/*.json), so a template that starts using a new type makes
`--check` fail until the table is regenerated.
"""

import glob
import json
import os
import sys

from cfnlint.version import __version__ as CFNLINT_VERSION
from cfnlint.schema.manager import PROVIDER_SCHEMA_MANAGER

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
TABLE = os.path.join(ROOT, "ci", "iam", "handler-permissions.json")
CREATE_ONLY = os.path.join(ROOT, "ci", "iam", "create-only-properties.json")
REGION = "us-east-1"
HANDLERS = ("create", "read", "update", "delete")


def used_types() -> list:
    files = glob.glob(os.path.join(ROOT, "golden", "*", "expected", "stacks", "*.json"))
    files += glob.glob(os.path.join(ROOT, "golden-bootstrap", "*", "expected", "*.json"))
    if not files:
        raise SystemExit("iam-handlers: error: no golden stacks found\n  help: render them with `UPDATE_GOLDEN=1 cargo test --test golden`")
    types = set()
    for f in files:
        with open(f, encoding="utf-8") as fh:
            for res in json.load(fh).get("Resources", {}).values():
                types.add(res["Type"])
    return sorted(types)


def table() -> dict:
    out = {}
    for t in used_types():
        schema = PROVIDER_SCHEMA_MANAGER.get_resource_schema(REGION, t).schema
        handlers = schema.get("handlers", {})
        out[t] = {h: sorted(set(handlers.get(h, {}).get("permissions", []))) for h in HANDLERS}
    return {
        "source": f"cfn-lint {CFNLINT_VERSION} resource provider schemas ({REGION}); regenerate with ci/iam-handlers",
        "types": out,
    }


def create_only() -> dict:
    out = {}
    for t in used_types():
        schema = PROVIDER_SCHEMA_MANAGER.get_resource_schema(REGION, t).schema
        props = schema.get("createOnlyProperties", [])
        out[t] = sorted({p.removeprefix("/properties/") for p in props})
    return {
        "source": f"cfn-lint {CFNLINT_VERSION} resource provider schemas ({REGION}), createOnlyProperties; regenerate with ci/iam-handlers",
        "types": out,
    }


def main() -> int:
    outputs = [
        (TABLE, json.dumps(table(), indent=2, sort_keys=True) + "\n"),
        (CREATE_ONLY, json.dumps(create_only(), indent=2, sort_keys=True) + "\n"),
    ]
    if sys.argv[1:] == ["--check"]:
        for path, text in outputs:
            try:
                with open(path, encoding="utf-8") as fh:
                    current = fh.read()
            except FileNotFoundError:
                current = ""
            name = os.path.relpath(path, ROOT)
            if current != text:
                print(f"iam-handlers: error: {name} is stale\n  help: run `ci/iam-handlers` and commit the table", file=sys.stderr)
                return 1
            print(f"iam-handlers: {name} current ({len(json.loads(text)['types'])} resource types)", file=sys.stderr)
        return 0
    if sys.argv[1:]:
        print("iam-handlers: error: unknown arguments\n  help: `ci/iam-handlers` or `ci/iam-handlers --check`", file=sys.stderr)
        return 2
    for path, text in outputs:
        with open(path, "w", encoding="utf-8") as fh:
            fh.write(text)
        print(f"iam-handlers: wrote {path}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
