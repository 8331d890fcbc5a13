"""The approvals web console in headless Chromium (playwright-core driving Debian's chromium):
an approver signs in, sees the pending request with its full statement, clicks Approve, and the
agent waiting on phigate (a psycopg thread here) gets its masked rows.

The browser script is tests/integration/browser/console_approve.js; its npm dependency
(playwright-core, pinned in package-lock.json) is installed with `npm ci` in that folder.
Screenshots are kept in tests/artifacts/ (git-ignored).
"""

import json
import os
import secrets
import shutil
import subprocess
import threading

import psycopg
import pytest

from harness import AGENT, APPROVER, APPROVER_PASSWORD, REPO, approvals_overrides, clean_env, stop_and_check

BROWSER_DIR = REPO / "tests" / "integration" / "browser"
ARTIFACTS = REPO / "tests" / "artifacts"
CHROMIUM = os.environ.get("CHROMIUM", "/usr/bin/chromium")


@pytest.fixture(scope="session")
def playwright_installed():
    """node, chromium and playwright-core (npm ci from the committed package-lock.json when missing)."""
    node = shutil.which("node")
    assert node, "node is not installed (Debian: nodejs; scripts/deps.sh)"
    assert os.access(CHROMIUM, os.X_OK), f"{CHROMIUM} is missing (Debian: chromium; scripts/deps.sh)"
    if not (BROWSER_DIR / "node_modules" / "playwright-core" / "package.json").exists():
        npm = shutil.which("npm")
        assert npm, "npm is not installed; run `npm ci` in tests/integration/browser"
        out = subprocess.run([npm, "ci", "--no-audit", "--no-fund"], cwd=BROWSER_DIR, capture_output=True,
                             text=True, timeout=300)
        assert out.returncode == 0, f"npm ci in {BROWSER_DIR} failed:\n{out.stdout}{out.stderr}"
    return node


@pytest.fixture
def console_gateway(gateway_maker, stack, redis_secret_file, approver_verifier):
    prefix = f"phigate-it-console-{os.getpid()}-{secrets.token_hex(3)}:"
    gw = gateway_maker(approvals_overrides(stack, redis_secret_file, {APPROVER: approver_verifier},
                                           key_prefix=prefix, wait_ms=60000), name="console")
    yield gw
    stop_and_check(gw)


@pytest.mark.parametrize("when", ["before_sign_in", "after_sign_in"])
def test_console_approve_releases_the_waiting_agent(console_gateway, playwright_installed, stack, when):
    """before_sign_in: the request is in the page phigate renders; after_sign_in: the page's 2 s
    refresh script has to add it (rows built with textContent)."""
    gw = console_gateway
    # Markup in the statement: the console must show it as text, not render it.
    sql = f"SELECT first_name, ssn, '<b>console</b> & \"{when}\"' AS note FROM patients"
    with psycopg.connect(**stack.connect_kwargs("clinic")) as conn:
        raw = {v for row in conn.execute("SELECT first_name, ssn FROM patients").fetchall() for v in row}

    result = {}

    def agent():
        try:
            with psycopg.connect(**gw.connect_kwargs("clinic"), autocommit=True) as conn:
                result["rows"] = conn.execute(sql).fetchall()
        except psycopg.Error as e:
            result["error"] = e
    t = threading.Thread(target=agent, daemon=True)
    if when == "before_sign_in":
        t.start()

    shots = ARTIFACTS / f"console-{when}"
    shots.mkdir(parents=True, exist_ok=True)
    reason = "console test " + secrets.token_hex(3)
    opts = {"url": gw.admin_url, "approver": APPROVER, "password": APPROVER_PASSWORD, "statement": sql,
            "reason": reason, "artifacts": str(shots), "timeout_ms": 20000}
    proc = subprocess.Popen([playwright_installed, str(BROWSER_DIR / "console_approve.js"), json.dumps(opts)],
                            cwd=BROWSER_DIR, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=clean_env(CHROMIUM=CHROMIUM))
    lines = []
    try:
        for line in proc.stdout:
            lines.append(line)
            if '"signed_in"' in line and not t.is_alive() and when == "after_sign_in":
                t.start()
        proc.wait(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    stderr = proc.stderr.read()
    try:
        report = json.loads(lines[-1])
    except (IndexError, ValueError):
        pytest.fail(f"the browser script printed no report (exit {proc.returncode}):\n{''.join(lines)}\n{stderr}")
    assert proc.returncode == 0 and report["ok"], f"{report}\n{stderr}\n{gw.diagnostics()}"
    assert t.ident is not None, "the browser never signed in"

    # Sign-in went through the login form to the console.
    assert report["login_url"].endswith("/login"), report
    assert not report["after_login_url"].endswith("/login"), report
    # The pending request showed the full statement, as text, and who asked.
    assert report["statement"] == sql, report
    assert AGENT in report["identity"], report
    assert not report["console_errors"], f"script errors in the console: {report['console_errors']}"
    assert report["page_error"] is None, report
    assert report["rows_after"] == 0, "the approved request is still listed"
    assert report["flash"] and "approved" in report["flash"] and report["id"] in report["flash"], report
    for shot in report["shots"]:
        assert os.path.getsize(shot) > 5000, shot

    t.join(30)
    assert not t.is_alive(), "the agent still waits after the approval in the console\n" + gw.diagnostics()
    assert "error" not in result, f"{result['error'].sqlstate}: {result['error']}"
    rows = result["rows"]
    assert len(rows) == 500
    assert not [c for row in rows for c in row if c in raw], "raw PHI reached the agent"
    assert all(r[0] == "[REDACTED]" and r[1].startswith("***-**-") for r in rows)
    assert rows[0][2] == f'<b>console</b> & "{when}"'
    assert f"approved by {APPROVER}" in gw.log()
    assert reason in gw.audit_text()
