"""`redline serve` in a real headless Chromium, driven over the DevTools protocol: the
recent-changes page, a click through to a diff, the changed words marked, and not one line
of JavaScript from the hostile statement run (escaping first, the CSP behind it)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from conftest import REPO, write_config
from test_web import (  # noqa: F401 (record and record_templates are fixtures)
    Record,
    record,
    record_templates,
    start_serve,
)

CHROMIUM = next((p for p in (shutil.which(n) for n in ("chromium", "chromium-browser"))
                 if p), None)
pytestmark = pytest.mark.skipif(
    CHROMIUM is None, reason="no chromium binary on PATH (Debian: apt-get install -y chromium)")
websocket = pytest.importorskip("websocket", reason="pip install websocket-client")

ARTIFACTS = REPO / "test-artifacts"


def wait_until(check: Callable[[], Any], timeout: float, what: str,
               idle: Callable[[], None] | None = None) -> Any:
    """Return check()'s first truthy value; between checks run `idle` (which blocks briefly
    on something real, e.g. the next DevTools message); fail after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout} s waiting for {what}")
        if idle is not None:
            idle()


@pytest.fixture
def server(record: Record, db_url: str, tmp_path: Path) -> Iterator[str]:  # noqa: F811
    """`redline serve` as a real process (uvicorn on 127.0.0.1), on the test's database."""
    served = start_serve(write_config(tmp_path, db_url), tmp_path)
    try:
        yield served.base
    finally:
        assert served.stop() == 0


class DevTools:
    """A minimal Chrome DevTools Protocol client over one page's WebSocket."""

    def __init__(self, ws_url: str) -> None:
        self.ws = websocket.create_connection(ws_url, timeout=10, suppress_origin=True)
        self.events: list[dict[str, Any]] = []
        self._id = 0

    def _receive(self, timeout: float) -> dict[str, Any] | None:
        self.ws.settimeout(timeout)
        try:
            message: dict[str, Any] = json.loads(self.ws.recv())
        except websocket.WebSocketTimeoutException:
            return None
        if "method" in message:
            self.events.append(message)
        return message

    def call(self, method: str, **params: Any) -> dict[str, Any]:
        self._id += 1
        call_id = self._id
        self.ws.send(json.dumps({"id": call_id, "method": method, "params": params}))
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            message = self._receive(1.0)
            if message and message.get("id") == call_id:
                if "error" in message:
                    raise AssertionError(f"{method}: {message['error']}")
                result: dict[str, Any] = message.get("result", {})
                return result
        raise AssertionError(f"no answer to {method}")

    def evaluate(self, expression: str) -> Any:
        result = self.call("Runtime.evaluate", expression=expression, returnByValue=True)
        if "exceptionDetails" in result:
            raise AssertionError(f"{expression}: {result['exceptionDetails']}")
        return result["result"].get("value")

    def pump(self) -> None:
        """Wait (briefly) for the next event from the browser."""
        self._receive(0.2)

    def named(self, method: str) -> list[dict[str, Any]]:
        return [e for e in self.events if e["method"] == method]

    def wait_for_load(self, since: int) -> None:
        wait_until(lambda: any(e["method"] == "Page.loadEventFired"
                               for e in self.events[since:]), 15, "the page to load",
                   idle=self.pump)

    def close(self) -> None:
        self.ws.close()


@pytest.fixture
def browser(tmp_path: Path) -> Iterator[DevTools]:
    """Headless Chromium with a throw-away profile; one page, attached over DevTools."""
    profile = tmp_path / "profile"
    proc = subprocess.Popen(
        [str(CHROMIUM), "--headless", "--no-sandbox", "--disable-gpu",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--no-first-run", "--no-default-browser-check", "--disable-extensions",
         f"--user-data-dir={profile}", "--remote-debugging-address=127.0.0.1",
         "--remote-debugging-port=0", "--window-size=1000,1400", "about:blank"],
        stdout=subprocess.DEVNULL, stderr=(tmp_path / "chromium.log").open("w"))
    active = profile / "DevToolsActivePort"

    def started() -> bool:
        if proc.poll() is not None:
            pytest.fail("chromium exited: " + (tmp_path / "chromium.log").read_text()[-2000:])
        return active.is_file() and len(active.read_text().splitlines()) >= 2

    # DevToolsActivePort appears once the debugging port is open; poll it on a short
    # blocking wait for the process rather than a sleep
    wait_until(started, 30, "chromium's DevTools port",
               idle=lambda: _wait_process(proc, 0.1))
    port = int(active.read_text().splitlines()[0])
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list", timeout=10) as r:
        targets = json.load(r)
    page = next(t for t in targets if t["type"] == "page")
    tools = DevTools(page["webSocketDebuggerUrl"])
    for domain in ("Page", "Runtime", "Log"):
        tools.call(f"{domain}.enable")
    try:
        yield tools
    finally:
        tools.close()
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _wait_process(proc: subprocess.Popen[bytes], seconds: float) -> None:
    try:
        proc.wait(timeout=seconds)
    except subprocess.TimeoutExpired:
        pass


def _click(tools: DevTools, selector: str) -> None:
    """A real mouse click at the centre of the element."""
    box = tools.evaluate(f"""(() => {{
        const el = document.querySelector({json.dumps(selector)});
        if (!el) return null;
        el.scrollIntoView({{block: "center"}});
        const r = el.getBoundingClientRect();
        return {{x: r.left + r.width / 2, y: r.top + r.height / 2}};
    }})()""")
    assert box, f"no element {selector}"
    for kind in ("mousePressed", "mouseReleased"):
        tools.call("Input.dispatchMouseEvent", type=kind, x=box["x"], y=box["y"],
                   button="left", clickCount=1)


def _pwned(tools: DevTools) -> list[str]:
    """Every sign that script from a statement ran: console output, dialogs, the title."""
    signs = [json.dumps(e["params"]) for e in tools.named("Runtime.consoleAPICalled")
             if "pwned" in json.dumps(e["params"])]
    signs += [json.dumps(e["params"]) for e in tools.named("Page.javascriptDialogOpening")]
    # the hostile script would set the whole title to pwned-...; the escaped statement title
    # shown in it is text and expected
    title = tools.evaluate("document.title")
    if title.startswith("pwned") or not title.endswith(" · redline"):
        signs.append(f"title: {title}")
    return signs


def _csp_reports(tools: DevTools) -> list[str]:
    return [e["params"]["entry"]["text"] for e in tools.named("Log.entryAdded")
            if "Content Security Policy" in e["params"]["entry"]["text"]]


def test_browser_follows_a_change_to_its_diff_and_runs_no_statement_script(
        server: str, browser: DevTools, record: Record, db_url: str) -> None:  # noqa: F811
    """Chromium loads /, clicks the hostile statement's diff link, sees alpha struck and
    omega inserted, and no script from the statement ran; script injected into the page
    later is refused by the CSP, which reports the violation."""
    mark = len(browser.events)
    browser.call("Page.navigate", url=server + "/")
    browser.wait_for_load(mark)
    assert browser.evaluate("document.scripts.length") == 0
    titles = browser.evaluate(
        "Array.from(document.querySelectorAll('.change .title')).map(e => e.textContent)")
    assert any(t.startswith("Hostile <script>document.title='pwned-title'</script>")
               for t in titles)

    mark = len(browser.events)
    _click(browser, f"li.change a.diff-link[href^='/statements/{record.hostile_id}/diff']")
    browser.wait_for_load(mark)
    assert browser.evaluate("location.pathname + location.search") == \
        f"/statements/{record.hostile_id}/diff?from=1&to=2"
    assert browser.evaluate(
        "Array.from(document.querySelectorAll('.words del')).map(e => e.textContent.trim())"
    ) == ["alpha"]
    assert browser.evaluate(
        "Array.from(document.querySelectorAll('.words ins')).map(e => e.textContent.trim())"
    ) == ["omega"]
    text = browser.evaluate("document.body.innerText")
    assert "<script>console.log('pwned-escaped')</script>" in text
    assert "<img src=x onerror=console.log('pwned-escaped-img')>" in text
    assert browser.evaluate("document.scripts.length") == 0
    assert browser.evaluate("document.querySelectorAll('img, iframe, object, embed').length") \
        == 0
    assert browser.evaluate("document.getElementsByTagName('b').length") == 0
    assert _pwned(browser) == []
    assert _csp_reports(browser) == [], "the pages themselves must need no CSP exception"

    ARTIFACTS.mkdir(exist_ok=True)
    shot = browser.call("Page.captureScreenshot", format="png")["data"]
    kind = sa.engine.make_url(db_url).get_backend_name()
    path = ARTIFACTS / f"web-diff-{kind}.png"
    import base64

    path.write_bytes(base64.b64decode(shot))
    assert path.stat().st_size > 10_000

    # behind the escaping, the CSP: markup forced into the page still cannot run script
    browser.evaluate("""(() => {
        window.__violations = [];
        document.addEventListener('securitypolicyviolation',
                                  e => window.__violations.push(e.violatedDirective));
        const words = document.querySelector('.words');
        // the link first, so the broken image below it cannot move it before the click
        words.insertAdjacentHTML('afterbegin',
            '<a id="jslink" href="javascript:console.log(\\'pwned-injected-link\\')">x</a> ');
        words.insertAdjacentHTML('beforeend',
            '<img src="/static/missing.png" onerror="console.log(\\'pwned-injected-img\\')">');
        const s = document.createElement('script');
        s.textContent = "console.log('pwned-injected-script')";
        document.body.appendChild(s);
        return true;
    })()""")

    def violations(n: int) -> Callable[[], list[str]]:
        def at_least() -> list[str]:
            found: list[str] = browser.evaluate("window.__violations")
            return found if len(found) >= n else []
        return at_least

    # the image's failed load (and the layout it shifts) first, then click the link
    wait_until(violations(2), 10, "the CSP to refuse the handler and the script",
               idle=browser.pump)
    _click(browser, "#jslink")
    found = wait_until(violations(3), 10, "the CSP to refuse the javascript: link",
                       idle=browser.pump)
    assert sorted(found) == ["script-src-attr", "script-src-elem", "script-src-elem"], found
    wait_until(lambda: len(_csp_reports(browser)) >= 3, 10, "CSP reports in the console log",
               idle=browser.pump)
    assert _pwned(browser) == []
    assert os.path.exists(path)
