"""Open every page of a results site in headless Chromium, as a reader would, and fail on what a
reader would see broken: a resource that does not load, any request off this machine, a console
error, a Markdown table shown as text, an image that does not display, a figure of the run shown
nowhere. Saves a 1400x900 screenshot of each page's first screen (``--full-page``: whole pages).

    python scripts/check_site.py outputs/default/site [--screenshots DIR] [--full-page]

Speaks the DevTools protocol to Debian's ``chromium`` over a websocket (``websocket-client``):
Selenium would need a ``chromium-driver`` of the very same version as the browser, and the
protocol alone gives everything checked here (network failures, console, the DOM, screenshots).
"""
from __future__ import annotations

import argparse
import base64
import hashlib
import json
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from urllib.parse import unquote, urlparse

import websocket

WIDTH, HEIGHT = 1400, 900

#: Text outside code that looks like a pipe table (a "|---|" rule, or a line framed by pipes with
#: a pipe inside): what a Markdown table rendered as text looks like.
PAGE_PROBE = r"""
(() => {
  const skip = new Set(["PRE", "CODE", "SCRIPT", "STYLE", "TEXTAREA", "NOSCRIPT"]);
  const walker = document.createTreeWalker(document.body, NodeFilter.SHOW_TEXT);
  const rule = /\|\s*:?-{3,}:?\s*\|/, framed = /^\s*\|[^|\n]+\|[^|\n]*\|\s*$/m;
  const directive = /(```|~~~)\{[a-z-]+\}|^:name: /m;  // a MyST directive the parser left as text
  const tables = [], directives = [];
  for (let node = walker.nextNode(); node; node = walker.nextNode()) {
    let el = node.parentElement, inCode = false;
    for (; el; el = el.parentElement) if (skip.has(el.tagName)) { inCode = true; break; }
    const text = node.textContent;
    if (!inCode && (rule.test(text) || framed.test(text))) tables.push(text.trim().slice(0, 120));
    if (!inCode && directive.test(text)) directives.push(text.trim().slice(0, 120));
  }
  const images = [...document.images].map(i => ({src: i.currentSrc || i.src, ok: i.complete && i.naturalWidth > 0}));
  return JSON.stringify({tables, directives, images, title: document.title});
})()
"""


class Browser:
    """One headless Chromium and one tab, driven over the DevTools protocol."""

    def __init__(self, binary: str):
        self.profile = tempfile.mkdtemp(prefix="check-site-")
        self.proc = subprocess.Popen(
            [binary, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars", "--no-first-run",
             "--disable-extensions", "--allow-file-access-from-files", f"--window-size={WIDTH},{HEIGHT}",
             "--remote-debugging-port=0", f"--user-data-dir={self.profile}", "about:blank"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        port_file = Path(self.profile) / "DevToolsActivePort"
        for _ in range(300):
            if port_file.exists() and port_file.read_text().count("\n") >= 1:
                break
            time.sleep(0.1)
        else:
            raise RuntimeError(f"{binary} did not start its DevTools endpoint")
        port = port_file.read_text().split("\n")[0]
        tabs = json.loads(urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list", timeout=10).read())
        page = next(t for t in tabs if t.get("type") == "page")
        self.ws = websocket.create_connection(page["webSocketDebuggerUrl"], timeout=60, suppress_origin=True)
        self.next_id, self.events = 0, []
        for domain in ("Page", "Runtime", "Log", "Network"):
            self.call(f"{domain}.enable")
        self.call("Emulation.setDeviceMetricsOverride", width=WIDTH, height=HEIGHT, deviceScaleFactor=1, mobile=False)

    def call(self, method: str, **params) -> dict:
        self.next_id += 1
        self.ws.send(json.dumps({"id": self.next_id, "method": method, "params": params}))
        while True:
            message = json.loads(self.ws.recv())
            if message.get("id") == self.next_id:
                if "error" in message:
                    raise RuntimeError(f"{method}: {message['error']}")
                return message.get("result", {})
            self.events.append(message)

    def drain(self, seconds: float) -> None:
        """Collect events for ``seconds`` (late requests, console messages)."""
        self.ws.settimeout(0.1)
        end = time.time() + seconds
        while time.time() < end:
            try:
                self.events.append(json.loads(self.ws.recv()))
            except websocket.WebSocketTimeoutException:
                continue
        self.ws.settimeout(60)

    def load(self, url: str) -> list[dict]:
        """Navigate, wait for the load event and a quiet moment; the events seen on the way."""
        self.events = []
        self.call("Page.navigate", url=url)
        end = time.time() + 30
        while time.time() < end and not any(e.get("method") == "Page.loadEventFired" for e in self.events):
            self.drain(0.2)
        self.call("Runtime.evaluate", expression="document.querySelectorAll('img').forEach(i => i.loading = 'eager')")
        self.drain(0.5)
        return self.events

    def evaluate(self, expression: str):
        result = self.call("Runtime.evaluate", expression=expression, returnByValue=True)
        return result["result"].get("value")

    def screenshot(self, path: Path, full_page: bool) -> None:
        params = {"format": "png"}
        if full_page:
            size = self.call("Page.getLayoutMetrics")["cssContentSize"]
            params.update(captureBeyondViewport=True,
                          clip={"x": 0, "y": 0, "width": WIDTH, "height": min(size["height"], 16000), "scale": 1})
        path.write_bytes(base64.b64decode(self.call("Page.captureScreenshot", **params)["data"]))

    def close(self) -> None:
        try:
            self.ws.close()
        finally:
            self.proc.terminate()
            self.proc.wait(timeout=10)
            shutil.rmtree(self.profile, ignore_errors=True)


def problems_of(events: list[dict], probe: dict) -> list[str]:
    """What a reader would see broken on one page, from its events and the DOM probe."""
    found = []
    for e in events:
        method, p = e.get("method"), e.get("params", {})
        if method == "Network.requestWillBeSent":
            url = p["request"]["url"]
            if not url.startswith(("file:", "data:", "about:", "blob:")):
                found.append(f"request off this machine: {url}")
        elif method == "Network.loadingFailed" and not p.get("canceled"):
            found.append(f"failed to load: {p.get('errorText')} ({p.get('type')})")
        elif method == "Runtime.exceptionThrown":
            found.append(f"script error: {p['exceptionDetails'].get('text')} "
                         f"{p['exceptionDetails'].get('exception', {}).get('description', '')[:200]}")
        elif method == "Runtime.consoleAPICalled" and p.get("type") in ("error", "assert"):
            found.append("console error: " + " ".join(str(a.get("value", a.get("description", ""))) for a in p["args"])[:300])
        elif method == "Log.entryAdded" and p["entry"].get("level") == "error":
            found.append(f"console error: {p['entry'].get('text')} {p['entry'].get('url', '')}")
    found += [f"table shown as text: {t!r}" for t in probe["tables"]]
    found += [f"directive shown as text: {t!r}" for t in probe.get("directives", [])]
    found += [f"image does not display: {i['src']}" for i in probe["images"] if not i["ok"]]
    return found


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def check(site: Path, screenshots: Path | None, full_page: bool, binary: str) -> int:
    pages = sorted(p for p in site.rglob("*.html") if not p.relative_to(site).parts[0].startswith("_"))
    if not pages:
        print(f"error: no HTML pages under {site}", file=sys.stderr)
        return 2
    figures = {_digest(p): p.name for p in sorted((site.parent / "figures").glob("*.png"))}
    displayed: set[str] = set()
    total = 0
    browser = Browser(binary)
    try:
        for page in pages:
            name = page.relative_to(site).as_posix()
            events = browser.load(page.resolve().as_uri())
            probe = json.loads(browser.evaluate(PAGE_PROBE))
            for image in probe["images"]:
                source = urlparse(image["src"])
                if image["ok"] and source.scheme == "file":
                    displayed.add(_digest(Path(unquote(source.path))))
            found = problems_of(events, probe)
            total += len(found)
            print(f"{'ok ' if not found else 'BAD'} {name}: {len(probe['images'])} image(s), {len(found)} problem(s)")
            for line in found:
                print(f"      {line}")
            if screenshots is not None:
                screenshots.mkdir(parents=True, exist_ok=True)
                browser.screenshot(screenshots / (name.replace("/", "__").removesuffix(".html") + ".png"), full_page)
    finally:
        browser.close()
    unseen = sorted(n for d, n in figures.items() if d not in displayed)
    for n in unseen:
        print(f"BAD figures/{n} is displayed on no page")
    total += len(unseen)
    print(f"{len(pages)} page(s), {len(figures)} figure(s) of the run, {total} problem(s)"
          + (f"; screenshots in {screenshots}" if screenshots else ""))
    return 1 if total else 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("site", type=Path, help="the site folder, e.g. outputs/default/site")
    parser.add_argument("--screenshots", type=Path, help="where the screenshots go (default: <run>/screenshots)")
    parser.add_argument("--no-screenshots", action="store_true")
    parser.add_argument("--full-page", action="store_true", help="whole pages, not the first screen")
    parser.add_argument("--chromium", default=shutil.which("chromium") or shutil.which("chromium-browser") or "chromium")
    args = parser.parse_args(argv)
    if not (args.site / "index.html").is_file():
        print(f"error: {args.site} has no index.html; build it with `python -m iqalib site <run folder>`", file=sys.stderr)
        return 2
    if not shutil.which(args.chromium):
        print(f"error: no Chromium at {args.chromium!r} (Debian: apt-get install chromium)", file=sys.stderr)
        return 2
    shots = None if args.no_screenshots else (args.screenshots or args.site.parent / "screenshots")
    return check(args.site, shots, args.full_page, args.chromium)


if __name__ == "__main__":
    sys.exit(main())
