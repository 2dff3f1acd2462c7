"""Runs Checkov over pipeforge's own stacks and enforces the project's rule: no failed check, and
every skip (`Metadata.checkov.skip[]` in the template) carries a comment that says why.

Usage (through ci/checkov): scan.py FILE...   Exit codes: 0 clean, 1 findings, 2 error.
"""

import json
import subprocess
import sys


def main(files):
    if not files:
        print("checkov: error: no templates given", file=sys.stderr)
        return 2
    out = subprocess.run(
        [sys.executable, "-m", "checkov.main", "--framework", "cloudformation", "-o", "json", "--skip-download"]
        + [a for f in files for a in ("-f", f)],
        capture_output=True,
        text=True,
    )
    try:
        reports = json.loads(out.stdout)
    except json.JSONDecodeError:
        print(out.stdout[-2000:], out.stderr[-2000:], sep="\n", file=sys.stderr)
        print("checkov: error: Checkov printed no JSON report", file=sys.stderr)
        return 2
    if isinstance(reports, dict):
        reports = [reports]
    failed, unexplained, skipped, passed = [], [], [], 0
    for r in reports:
        res = r.get("results", {})
        passed += len(res.get("passed_checks", []))
        for c in res.get("failed_checks", []):
            failed.append(f"{c['file_path']}: {c['resource']}: {c['check_id']} {c['check_name']}")
        for c in res.get("skipped_checks", []):
            comment = (c.get("check_result") or {}).get("suppress_comment") or ""
            line = f"{c['file_path']}: {c['resource']}: {c['check_id']}"
            skipped.append(line)
            if not comment.strip() or comment.strip() == "No comment provided":
                unexplained.append(line)
    for line in failed:
        print(f"failed: {line}")
    for line in unexplained:
        print(f"skipped without a comment: {line}")
    print(
        f"checkov: {len(files)} templates, {passed} passed, {len(failed)} failed, {len(skipped)} skipped with a reason",
        file=sys.stderr,
    )
    if failed or unexplained:
        print(
            "  help: fix the template, or skip the check in the resource's `Metadata.checkov.skip` with a `comment`, and list it in the README",
            file=sys.stderr,
        )
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
