"""The preview page in a real browser: Debian's headless Chromium driven by Playwright.

Starts `pipeforge preview --web --listen 127.0.0.1:0`, pastes a valid and an invalid manifest,
and asserts from the DOM: the diagram's stages and approval nodes, and the inline problem at the
right line. Saves a screenshot under target/browser/. Run through ci/browser-test.
"""

import json
import os
import subprocess
import sys
import tempfile

from playwright.sync_api import sync_playwright

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
BIN = os.environ.get("PIPEFORGE_BIN", os.path.join(ROOT, "target", "debug", "pipeforge"))
CHROMIUM = os.environ.get("CHROMIUM", "/usr/bin/chromium")
OUT = os.path.join(ROOT, "target", "browser")
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync"]

passed = 0
failed = 0

# Characters beyond Latin-1 in the page's own words (verdict, diagram): symbols and emoji that
# a browser without the right font draws as boxes.
NON_LATIN1 = """() => [...(document.querySelector('#verdict').innerText
  + document.querySelector('#diagram').textContent)].filter(c => c.codePointAt(0) > 0xff)"""


def check(cond, what):
    global passed, failed
    if cond:
        passed += 1
        print(f"ok: {what}")
    else:
        failed += 1
        print(f"FAILED: {what}")


def start_server():
    proc = subprocess.Popen([BIN, "preview", "--web", "--listen", "127.0.0.1:0"],
                            stdout=subprocess.PIPE, stderr=sys.stderr, text=True)
    for line in proc.stdout:
        event = json.loads(line)
        if event.get("msg") == "listening":
            return proc, event["url"]
    raise SystemExit("pipeforge preview --web did not start")


def main():
    os.makedirs(OUT, exist_ok=True)
    manifest = open(os.path.join(ROOT, "examples", "pipeline.yml"), encoding="utf-8").read()
    broken = manifest.replace("approval: true", "approval: false")
    bad_line = broken.splitlines().index(next(l for l in broken.splitlines() if "approval: false" in l)) + 1
    proc, url = start_server()
    assert url.startswith("http://127.0.0.1:"), url
    try:
        with tempfile.TemporaryDirectory() as profile, sync_playwright() as p:
            # A fresh profile (--user-data-dir) per run.
            browser = p.chromium.launch_persistent_context(
                profile, executable_path=CHROMIUM, args=FLAGS, headless=True,
                viewport={"width": 1500, "height": 1100}, accept_downloads=True)
            page = browser.new_page()
            # Loopback only: any other request is refused.
            page.route("**/*", lambda r: r.continue_() if r.request.url.startswith(url) else r.abort())
            page.goto(url)
            # The examples arrive by a request of their own after the page loads: wait for
            # them (on a loaded machine the count was taken before they came).
            try:
                page.wait_for_function(
                    "document.querySelectorAll('#examples option').length >= 2", timeout=30000)
            except Exception:  # a timeout: the check below fails and says what is missing
                pass
            check(page.locator("#examples option").count() >= 2, "examples are offered")

            page.fill("#manifest", manifest)
            page.click("#run")
            page.wait_for_selector("#verdict.valid")
            stages = page.eval_on_selector_all("#diagram g.stage", "gs => gs.map(g => g.dataset.stage)")
            check(stages[:3] == ["Source", "CI", "Build"], f"stages start Source, CI, Build: {stages}")
            check(any(s.startswith("Deploy") for s in stages), f"deploy stages drawn: {stages}")
            approvals = page.eval_on_selector_all("#diagram g.action.approval", "gs => gs.map(g => g.dataset.environment)")
            check("prod" in approvals, f"an approval node for prod: {approvals}")
            deploys = page.locator("#diagram g.action.deploy").count()
            check(deploys >= 3, f"deploy actions with accounts and regions: {deploys}")
            files = page.eval_on_selector_all("#files details.file", "ds => ds.map(d => d.dataset.path)")
            check("buildspecs/test.yml" in files and "stacks/pipeline.json" in files, f"every file listed: {len(files)}")
            page.click("#files details[data-path='buildspecs/test.yml'] summary")
            check(page.locator("#files details[data-path='buildspecs/test.yml'] .tok-key").count() > 5,
                  "buildspecs are highlighted")
            check("ssm:/payments/db/password" in page.inner_text("#diagram"), "secret references are shown")
            check(not page.locator("#download").is_disabled(), "the bundle can be downloaded")
            # Icons are inline SVG, never font glyphs (a missing font draws them as boxes).
            check(page.locator("#verdict svg.icon.valid").count() == 1, "the verdict's icon is SVG")
            check(page.locator("#diagram g.action.approval g.pause").count() >= 1, "approvals' icon is SVG")
            glyphs = page.evaluate(NON_LATIN1)
            check(glyphs == [], f"no symbol glyphs in the verdict or the diagram: {glyphs}")
            with page.expect_download() as d:
                page.click("#download")
            check(d.value.suggested_filename == "orders-api.zip", f"zip download: {d.value.suggested_filename}")
            page.screenshot(path=os.path.join(OUT, "preview-valid.png"), full_page=False)

            page.fill("#manifest", broken)
            page.click("#run")
            page.wait_for_selector("#verdict.invalid")
            check(page.locator("#verdict svg.icon.invalid").count() == 1, "the invalid verdict's icon is SVG")
            glyphs = page.evaluate(NON_LATIN1)
            check(glyphs == [], f"no symbol glyphs in the verdict: {glyphs}")
            inline = page.locator(f"#annotated .problem[data-line='{bad_line}']")
            check(inline.count() == 1, f"the problem is inline at line {bad_line}")
            check("approval" in inline.inner_text(), "the inline problem names the approval")
            check(page.locator(f"#annotated .ln.error-line[data-line='{bad_line}']").count() == 1,
                  "the offending line is marked")
            check(page.locator("#diagram g.stage").count() == 0, "no diagram for an invalid manifest")
            check(page.locator("#download").is_disabled(), "no download for an invalid manifest")
            page.screenshot(path=os.path.join(OUT, "preview-invalid.png"), full_page=False)
            browser.close()
    finally:
        proc.terminate()
        proc.wait(timeout=10)
    print(f"{passed} passed, {failed} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
