"""Headless Chromium for the tests of archlab's HTML pages: open a page from disk over the
DevTools protocol, on loopback, and report its console errors, the requests it made and
how its plots were drawn."""
from __future__ import annotations

import contextlib
import json
import shutil
import subprocess
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Iterator

import pytest

from study_fixtures import wait_for


def _chromium() -> str:
    for name in ("chromium", "chromium-browser", "google-chrome", "chrome"):
        found = shutil.which(name)
        if found:
            return found
    pytest.skip("no Chromium (apt-get install chromium)")


class Browser:
    """Headless Chromium on loopback, one page, spoken to with DevTools commands."""

    def __init__(self, profile: Path) -> None:
        websocket = pytest.importorskip("websocket", reason="pip install websocket-client")
        self.proc = subprocess.Popen(
            [_chromium(), "--headless=new", "--no-sandbox", "--disable-gpu",
             "--no-first-run", "--no-default-browser-check", "--disable-extensions",
             "--remote-debugging-address=127.0.0.1", "--remote-debugging-port=0",
             f"--user-data-dir={profile}", "--window-size=1280,900", "about:blank"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        port_file = profile / "DevToolsActivePort"
        port = wait_for(lambda: port_file.is_file() and port_file.read_text().split("\n")[0],
                        timeout=60)
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list", timeout=10) as r:
            pages = [t for t in json.load(r) if t["type"] == "page"]
        self.ws = websocket.create_connection(pages[0]["webSocketDebuggerUrl"], timeout=60,
                                              suppress_origin=True)
        self.next_id = 0
        self.events: list[dict] = []

    def send(self, method: str, **params):
        self.next_id += 1
        self.ws.send(json.dumps({"id": self.next_id, "method": method, "params": params}))
        while True:
            msg = json.loads(self.ws.recv())
            if msg.get("id") == self.next_id:
                if "error" in msg:
                    raise RuntimeError(f"{method}: {msg['error']}")
                return msg.get("result", {})
            self.events.append(msg)

    def wait_event(self, method: str, timeout: float = 60.0) -> dict:
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            for i, e in enumerate(self.events):
                if e.get("method") == method:
                    return self.events.pop(i)
            self.events.append(json.loads(self.ws.recv()))
        raise TimeoutError(method)

    def evaluate(self, expression: str):
        result = self.send("Runtime.evaluate", expression=expression, returnByValue=True)
        if "exceptionDetails" in result:
            raise RuntimeError(result["exceptionDetails"])
        return result["result"].get("value")

    def close(self) -> None:
        try:
            self.ws.close()
        finally:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()

    def problems_and_requests(self) -> tuple[list[str], list[str]]:
        """The console errors and uncaught exceptions seen so far, and every URL requested."""
        problems, requests = [], []
        for e in self.events:
            method, p = e.get("method"), e.get("params", {})
            if method == "Runtime.exceptionThrown":
                problems.append(p["exceptionDetails"].get("text"))
            elif method == "Runtime.consoleAPICalled" and p.get("type") in ("error", "assert"):
                problems.append(json.dumps(p.get("args")))
            elif method == "Log.entryAdded" and p["entry"]["level"] == "error":
                problems.append(p["entry"]["text"])
            elif method == "Network.requestWillBeSent":
                requests.append(p["request"]["url"])
        return problems, requests

    def drawn_figures(self, selector: str = "figure.plot") -> dict[str, dict]:
        """{figure id: its svg's drawn width, height and number of marks} for every figure
        that `selector` matches, as the browser laid them out."""
        drawn = self.evaluate("""JSON.stringify([...document.querySelectorAll(%s)]
            .map(f => { const s = f.querySelector('svg'); const b = s && s.getBoundingClientRect();
              return {id: f.id, empty: f.classList.contains('empty'),
                      width: b ? b.width : 0, height: b ? b.height : 0,
                      marks: s ? s.querySelectorAll('path, use, rect, image').length : 0}; }))"""
                              % json.dumps(selector))
        return {f["id"]: f for f in json.loads(drawn)}


@contextlib.contextmanager
def open_page(path: Path) -> Iterator[tuple[Browser, list[str], list[str]]]:
    """Load the HTML file `path` in a fresh headless Chromium; yield the browser, the
    page's console errors and the URLs it requested while loading."""
    profile = Path(tempfile.mkdtemp(prefix="archlab-chromium-"))
    browser = Browser(profile)
    try:
        for domain in ("Page", "Runtime", "Log", "Network"):
            browser.send(f"{domain}.enable")
        browser.send("Page.navigate", url=Path(path).resolve().as_uri())
        browser.wait_event("Page.loadEventFired")
        problems, requests = browser.problems_and_requests()
        yield browser, problems, requests
    finally:
        browser.close()
        shutil.rmtree(profile, ignore_errors=True)
