"""JupyterLab and a headless Chromium for the browser tests, one of each for the module.

Chromium is Debian's (/usr/bin/chromium), driven by Playwright's Python package; Playwright's own
browser download is not used. Screenshots of failures go to $CHATMAGIC_SCREENSHOTS (default: a
folder in the temp dir), whose path is printed at the end of the run.
"""

import json
import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import pytest

CHROMIUM = Path("/usr/bin/chromium")
SCREENSHOTS = Path(os.environ.get("CHATMAGIC_SCREENSHOTS") or Path(tempfile.gettempdir()) / "chatmagic-screenshots")
TOKEN = "chatmagic-browser-test"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
#: JupyterLab settings: every cell in the DOM (no windowing), no kernel dialog, nothing fetched.
SETTINGS = {
    "@jupyterlab/notebook-extension/tracker": {"windowingMode": "none"},
    "@jupyterlab/docmanager-extension/plugin": {"autoStartDefaultKernel": True},
    "@jupyterlab/apputils-extension/notification": {"fetchNews": "false", "checkForUpdates": False},
}


def pytest_collection_modifyitems(items):
    if CHROMIUM.exists() and _has_playwright():
        return
    why = f"needs {CHROMIUM} (apt-get install chromium) and playwright (pip install -e '.[dev]')"
    if os.environ.get("CI") == "true":
        return  # the fixtures fail the tests instead: CI must run them
    for item in items:
        if "browser" in str(item.fspath):
            item.add_marker(pytest.mark.skip(reason=why))


def _has_playwright() -> bool:
    try:
        import playwright.sync_api  # noqa: F401
        return True
    except ImportError:
        return False


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item, call):
    report = yield
    setattr(item, f"report_{report.when}", report)
    return report


def pytest_terminal_summary(terminalreporter):
    if SCREENSHOTS.exists() and any(SCREENSHOTS.iterdir()):
        terminalreporter.write_line(f"browser test screenshots: {SCREENSHOTS}")


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    """A JupyterLab server on 127.0.0.1 with a token and a temp root; yields (url, root, token)."""
    base = tmp_path_factory.mktemp("lab")
    for old in SCREENSHOTS.glob("*.png"):  # only this run's failures
        old.unlink()
    root, settings = base / "root", base / "settings"
    root.mkdir()
    for name, values in SETTINGS.items():
        path = settings / f"{name}.jupyterlab-settings"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(values))
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OPENAI_", "CHATMAGIC_MODEL"))}
    env.update(CHATMAGIC_CACHE_DIR=str(base / "cache"), JUPYTER_RUNTIME_DIR=str(base / "runtime"),
               JUPYTER_CONFIG_DIR=str(base / "config"))
    log = open(base / "lab.log", "w")  # open as long as the server runs
    proc = subprocess.Popen(
        [sys.executable, "-m", "jupyter", "lab", "--no-browser", "--allow-root", "--ip=127.0.0.1",
         f"--port={port}", f"--IdentityProvider.token={TOKEN}", f"--ServerApp.root_dir={root}",
         f"--LabApp.user_settings_dir={settings}", f"--LabApp.workspaces_dir={base / 'workspaces'}",
         "--LabApp.extension_manager=readonly"],
        env=env, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        _wait_until_up(proc, f"{url}/api/status?token={TOKEN}", base / "lab.log")
        yield url, root, TOKEN
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()


def _wait_until_up(proc, status_url: str, log: Path, timeout: float = 90) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"JupyterLab exited ({proc.returncode}):\n{log.read_text()[-2000:]}")
        try:
            urllib.request.urlopen(status_url, timeout=2).close()
            return
        except OSError:
            time.sleep(0.2)
    pytest.fail(f"JupyterLab did not answer within {timeout:.0f}s:\n{log.read_text()[-2000:]}")


@pytest.fixture(scope="module")
def browser_context(lab, tmp_path_factory):
    """Headless Debian Chromium with a fresh profile; any request beyond the lab is refused.
    Module scope: while Playwright's sync API is open, its event loop counts as running in this
    thread, which later tests that run cells in an InteractiveShell must not see."""
    if not CHROMIUM.exists():
        pytest.fail(f"{CHROMIUM} is missing: apt-get install -y chromium")
    from playwright.sync_api import sync_playwright
    url = lab[0]
    with sync_playwright() as p:
        context = p.chromium.launch_persistent_context(
            str(tmp_path_factory.mktemp("chromium-profile")), executable_path=str(CHROMIUM),
            headless=True, args=CHROMIUM_ARGS, viewport={"width": 1200, "height": 900})
        context.route("**/*", lambda route: route.continue_() if route.request.url.startswith((url, "data:"))
                      else route.abort())
        try:
            yield context
        finally:
            context.close()


@pytest.fixture
def page(browser_context, request):
    """A new tab; on failure its screenshot is saved under SCREENSHOTS."""
    tab = browser_context.new_page()
    yield tab
    report = getattr(request.node, "report_call", None)
    if report is None or report.failed:
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        tab.screenshot(path=str(SCREENSHOTS / f"{request.node.name}.png"), full_page=True)
    tab.close()
