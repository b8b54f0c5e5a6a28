"""Browser tests: the app on a real uvicorn server (the demo model), driven by Playwright
through Debian's Chromium, headless. Each test module gets its own server and store; a
module may set `SETTINGS`, a dict of Settings overrides."""

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from feedback.db import session_scope
from flywheel.model_loading import LoadedModel
from server.app import create_app
from tests.server.support import LiveServer, add_user, load_demo, make_settings

CHROMIUM = Path("/usr/bin/chromium")
DOCS = Path(__file__).resolve().parents[2] / "docs"

playwright_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed")


@pytest.fixture(scope="module")
def demo(models_dir: Path) -> LoadedModel:
    return load_demo(models_dir)


@pytest.fixture(scope="module")
def live(request: pytest.FixtureRequest, demo: LoadedModel,
         tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    overrides = {"max_new_tokens": 24, **getattr(request.module, "SETTINGS", {})}
    app = create_app(make_settings(tmp_path_factory.mktemp("web-data"), **overrides),
                     model=demo)
    with LiveServer(app) as server:
        yield server


@pytest.fixture(scope="module")
def operator_key(live: LiveServer) -> str:
    """An operator's API key on this module's server."""
    return add_user(live.app.state.db, role="operator", handle="operator-web")[1]


@pytest.fixture(scope="session")
def browser():
    if not CHROMIUM.exists():
        pytest.skip("Debian's chromium is not installed at /usr/bin/chromium "
                    "(apt-get install chromium; .ci/run does)")
    with playwright_api.sync_playwright() as p:
        browser = p.chromium.launch(
            executable_path=str(CHROMIUM), headless=True,
            args=["--no-sandbox", "--disable-gpu", "--disable-background-networking"])
        yield browser
        browser.close()


@pytest.fixture
def page(browser, live: LiveServer):
    """A fresh browser context (a new anonymous user), its errors collected: uncaught
    exceptions, and whatever the Content-Security-Policy blocked (which breaks the UI
    quietly otherwise)."""
    context = browser.new_context(viewport={"width": 1200, "height": 800})
    context.set_default_timeout(20_000)
    context.add_init_script(CSP_REPORTER)  # init scripts run whatever the policy says
    page = context.new_page()
    page.errors = []
    page.on("pageerror", lambda e: page.errors.append(str(e)))
    page.on("console", lambda m: _collect_csp_violation(page, m.text))
    yield page
    context.close()


CSP_REPORTER = """document.addEventListener("securitypolicyviolation", (e) =>
  console.error(`CSP violation: ${e.violatedDirective} ${e.blockedURI}`));"""


def _collect_csp_violation(page, text: str) -> None:
    if text.startswith("CSP violation: "):
        page.errors.append(text)


@pytest.fixture
def db(live: LiveServer):
    """Open a unit of work on the server's store."""
    return lambda: session_scope(live.app.state.db)


def screenshot(page, name: str, tmp_path: Path) -> Path:
    """Save a screenshot: into docs/ when FLYWHEEL_SCREENSHOTS=1, else into tmp_path."""
    target = (DOCS if os.environ.get("FLYWHEEL_SCREENSHOTS") == "1" else tmp_path) / name
    target.parent.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(target))
    return target
