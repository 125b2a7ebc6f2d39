"""Render a local HTML file in headless Chromium and report what it did.

Test helper (no third-party dependency): it starts Chromium with the
DevTools Protocol on a random port, drives it over a minimal RFC 6455
websocket client written with the standard library, and collects

* every network request the page makes other than the file itself and
  ``data:`` URIs (a self-contained page makes none),
* console errors, uncaught exceptions and error log entries,
* a full-page PNG screenshot written next to the file.

Usage::

    browser = find_chromium()
    if browser is None:
        pytest.skip(chromium_unavailable_reason())
    check = check_page(Path("report.html"), browser)
    assert not check.requests and not check.console_errors
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import re
import shutil
import socket
import struct
import subprocess
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable
from urllib.parse import urlsplit

__all__ = [
    "PageCheck",
    "find_chromium",
    "chromium_unavailable_reason",
    "check_page",
    "WebSocket",
    "CDPClient",
]

_CANDIDATES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
_INSTALL_TIMEOUT_S = 600.0
_DEVTOOLS_RE = re.compile(r"DevTools listening on (ws://\S+)")
_WS_GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"

# One install attempt per process; the reason is kept for skip messages.
_cache: dict[str, Any] = {}


# --------------------------------------------------------------------------- #
# Finding (or installing) Chromium
# --------------------------------------------------------------------------- #
def _which() -> str | None:
    """``$PARITY_CHROMIUM`` if executable, else the first candidate on ``PATH``."""
    explicit = os.environ.get("PARITY_CHROMIUM")
    if explicit and Path(explicit).is_file() and os.access(explicit, os.X_OK):
        return explicit
    for name in _CANDIDATES:
        found = shutil.which(name)
        if found:
            return found
    return None


def find_chromium(install: bool = True, timeout: float = _INSTALL_TIMEOUT_S) -> str | None:
    """Path of a Chromium binary, installing the Debian package once if needed.

    Looks at ``$PARITY_CHROMIUM``, then ``chromium``/``chromium-browser``/
    ``google-chrome`` on ``PATH``. When none is found and ``install`` is true
    (and ``$PARITY_NO_CHROMIUM_INSTALL`` is unset), runs
    ``apt-get install -y chromium`` once per process (only as root).

    Parameters
    ----------
    install : bool
        Allow the one-time ``apt-get install`` attempt.
    timeout : float
        Seconds allowed for the install.

    Returns
    -------
    str or None
        The binary, or ``None`` (see :func:`chromium_unavailable_reason`).
    """
    if "path" in _cache:
        return _cache["path"]
    path = _which()
    if path is None and install and not os.environ.get("PARITY_NO_CHROMIUM_INSTALL"):
        path = _try_install(timeout)
    elif path is None:
        _cache["reason"] = "chromium not found and installation disabled"
    _cache["path"] = path
    return path


def chromium_unavailable_reason() -> str:
    """Why :func:`find_chromium` returned ``None`` (for ``pytest.skip``)."""
    return _cache.get("reason", "chromium not found")


def _try_install(timeout: float) -> str | None:
    """One ``apt-get install -y chromium`` attempt (root only); sets the skip reason."""
    apt = shutil.which("apt-get")
    if apt is None:
        _cache["reason"] = "chromium not found and apt-get is not available"
        return None
    if hasattr(os, "geteuid") and os.geteuid() != 0:
        _cache["reason"] = "chromium not found (apt-get install -y chromium needs root)"
        return None
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    try:
        proc = subprocess.run([apt, "install", "-y", "--no-install-recommends", "chromium"],
                              capture_output=True, text=True, timeout=timeout, env=env)
    except (subprocess.TimeoutExpired, OSError) as exc:
        _cache["reason"] = f"chromium not found; apt-get install failed: {exc}"
        return None
    path = _which()
    if path is None:
        tail = (proc.stderr or proc.stdout or "").strip().splitlines()[-3:]
        _cache["reason"] = ("chromium not found; apt-get install -y chromium exited "
                            f"{proc.returncode}: {' | '.join(tail)}")
    return path


# --------------------------------------------------------------------------- #
# Minimal websocket client (RFC 6455: client masking, text frames, ping/pong)
# --------------------------------------------------------------------------- #
class WebSocket:
    """Blocking websocket client, enough for the DevTools protocol.

    Parameters
    ----------
    url : str
        ``ws://host:port/path`` (no TLS).
    timeout : float
        Socket timeout in seconds for connect and each read.
    """

    def __init__(self, url: str, timeout: float = 10.0) -> None:
        parts = urlsplit(url)
        if parts.scheme != "ws" or not parts.hostname:
            raise ValueError(f"unsupported websocket URL {url!r}")
        port = parts.port or 80
        path = parts.path or "/"
        self._sock = socket.create_connection((parts.hostname, port), timeout=timeout)
        self._buf = b""
        key = base64.b64encode(os.urandom(16)).decode("ascii")
        request = (f"GET {path} HTTP/1.1\r\nHost: {parts.hostname}:{port}\r\n"
                   "Upgrade: websocket\r\nConnection: Upgrade\r\n"
                   f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n")
        self._sock.sendall(request.encode("ascii"))
        while b"\r\n\r\n" not in self._buf:
            self._fill()
        head, self._buf = self._buf.split(b"\r\n\r\n", 1)
        lines = head.decode("latin-1").split("\r\n")
        if " 101 " not in lines[0] + " ":
            raise ConnectionError(f"websocket handshake refused: {lines[0]}")
        headers = {k.strip().lower(): v.strip() for k, _, v in
                   (line.partition(":") for line in lines[1:])}
        accept = base64.b64encode(hashlib.sha1((key + _WS_GUID).encode()).digest()).decode()
        if headers.get("sec-websocket-accept") != accept:
            raise ConnectionError("websocket handshake: bad Sec-WebSocket-Accept")

    def _fill(self) -> None:
        chunk = self._sock.recv(1 << 16)
        if not chunk:
            raise ConnectionError("websocket closed by peer")
        self._buf += chunk

    def _read(self, n: int) -> bytes:
        while len(self._buf) < n:
            self._fill()
        data, self._buf = self._buf[:n], self._buf[n:]
        return data

    def _send_frame(self, opcode: int, payload: bytes) -> None:
        header = bytes([0x80 | opcode])
        n = len(payload)
        if n < 126:
            header += bytes([0x80 | n])
        elif n < 1 << 16:
            header += bytes([0x80 | 126]) + struct.pack("!H", n)
        else:
            header += bytes([0x80 | 127]) + struct.pack("!Q", n)
        mask = os.urandom(4)
        masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
        self._sock.sendall(header + mask + masked)

    def send(self, text: str) -> None:
        """Send one text message."""
        self._send_frame(0x1, text.encode("utf-8"))

    def recv(self, timeout: float | None = None) -> str:
        """Receive one text message (answers pings; raises on close).

        Parameters
        ----------
        timeout : float, optional
            Socket timeout for this call; ``socket.timeout`` when it expires.
        """
        if timeout is not None:
            self._sock.settimeout(max(timeout, 0.001))
        message = b""
        while True:
            b0, b1 = self._read(2)
            fin, opcode = b0 & 0x80, b0 & 0x0F
            n = b1 & 0x7F
            if n == 126:
                n = struct.unpack("!H", self._read(2))[0]
            elif n == 127:
                n = struct.unpack("!Q", self._read(8))[0]
            mask = self._read(4) if b1 & 0x80 else None
            payload = self._read(n)
            if mask:
                payload = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
            if opcode == 0x8:
                raise ConnectionError("websocket closed by peer")
            if opcode == 0x9:
                self._send_frame(0xA, payload)
                continue
            if opcode == 0xA:
                continue
            message += payload
            if fin:
                return message.decode("utf-8")

    def close(self) -> None:
        """Send a close frame (best effort) and close the socket."""
        try:
            self._send_frame(0x8, b"")
        except OSError:
            pass
        self._sock.close()


# --------------------------------------------------------------------------- #
# DevTools protocol client
# --------------------------------------------------------------------------- #
class CDPClient:
    """Send DevTools commands and dispatch events to a callback.

    Parameters
    ----------
    ws : WebSocket
        Connected to the browser's DevTools endpoint.
    on_event : callable
        Called with each event message (dict with ``method``/``params``/
        optional ``sessionId``).
    """

    def __init__(self, ws: WebSocket, on_event: Callable[[dict], None]) -> None:
        self._ws = ws
        self._on_event = on_event
        self._next_id = 0

    def call(self, method: str, params: dict | None = None, session: str | None = None,
             timeout: float = 15.0) -> dict:
        """Send a command and wait for its answer, dispatching events meanwhile.

        Raises
        ------
        TimeoutError
            No answer within ``timeout``.
        RuntimeError
            The browser answered with an error.
        """
        self._next_id += 1
        msg_id = self._next_id
        message: dict[str, Any] = {"id": msg_id, "method": method, "params": params or {}}
        if session:
            message["sessionId"] = session
        self._ws.send(json.dumps(message))
        deadline = time.monotonic() + timeout
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError(f"DevTools: no answer to {method} within {timeout} s")
            try:
                reply = json.loads(self._ws.recv(timeout=remaining))
            except socket.timeout:
                continue
            if reply.get("id") == msg_id:
                if "error" in reply:
                    raise RuntimeError(f"DevTools {method} failed: {reply['error']}")
                return reply.get("result", {})
            if "method" in reply:
                self._on_event(reply)

    def pump(self, until: Callable[[], bool], timeout: float) -> bool:
        """Dispatch events until ``until()`` is true or ``timeout`` passes.

        Returns
        -------
        bool
            Whether ``until()`` became true.
        """
        deadline = time.monotonic() + timeout
        while not until():
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return False
            try:
                event = json.loads(self._ws.recv(timeout=remaining))
            except socket.timeout:
                return until()
            if "method" in event:
                self._on_event(event)
        return True


# --------------------------------------------------------------------------- #
# Page check
# --------------------------------------------------------------------------- #
@dataclass
class PageCheck:
    """What loading a page did.

    Attributes
    ----------
    requests : list of str
        URLs requested other than the page itself and ``data:`` URIs.
    console_errors : list of str
        Console ``error``/``assert`` calls, uncaught exceptions, and
        ``Log`` entries of level ``error`` (e.g. failed resource loads).
    screenshot_path : Path or None
        Full-page PNG screenshot.
    values : dict
        ``{expression: value}`` of the JavaScript expressions given to
        :func:`check_page` as ``evaluate`` (JSON-serialisable results).
    """

    requests: list[str] = field(default_factory=list)
    console_errors: list[str] = field(default_factory=list)
    screenshot_path: Path | None = None
    values: dict[str, Any] = field(default_factory=dict)


def _start_browser(binary: str, profile: str,
                   timeout: float) -> tuple[subprocess.Popen, threading.Thread, str]:
    """Launch headless Chromium; return (process, stderr reader thread, DevTools ws URL).

    Raises ``RuntimeError`` (after stopping the process) when no DevTools URL
    appears within ``timeout`` seconds.
    """
    args = [binary, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
            "--no-first-run", "--no-default-browser-check", "--disable-background-networking",
            "--disable-component-update", "--disable-sync", "--disable-extensions",
            "--disable-dev-shm-usage", "--hide-scrollbars", "--mute-audio",
            f"--user-data-dir={profile}", "--remote-debugging-port=0",
            "--window-size=1360,900", "about:blank"]
    proc = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True, errors="replace")
    lines: list[str] = []
    found = threading.Event()
    url: list[str] = []

    def drain() -> None:  # keeps reading so Chromium never blocks on a full pipe
        assert proc.stderr is not None
        for line in proc.stderr:
            lines.append(line.rstrip())
            match = _DEVTOOLS_RE.search(line)
            if match and not url:
                url.append(match.group(1))
                found.set()
        found.set()

    reader = threading.Thread(target=drain, daemon=True)
    reader.start()
    if not found.wait(timeout) or not url:
        _stop_browser(proc, reader)
        raise RuntimeError("chromium did not print its DevTools URL within "
                           f"{timeout} s; stderr: {' | '.join(lines[-5:])}")
    return proc, reader, url[0]


def _stop_browser(proc: subprocess.Popen, reader: threading.Thread) -> None:
    """Terminate (then kill) Chromium and close its stderr pipe."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=5)
    reader.join(timeout=5)
    if proc.stderr is not None and not reader.is_alive():
        proc.stderr.close()


def _same_document(url: str, page_url: str) -> bool:
    """Whether ``url`` is the page itself (ignoring the fragment)."""
    return url.split("#", 1)[0] == page_url.split("#", 1)[0]


def _console_text(params: dict) -> str:
    """Text of a ``Runtime.consoleAPICalled`` event's arguments."""
    parts = []
    for arg in params.get("args", []):
        parts.append(str(arg.get("value", arg.get("description", arg.get("type", "")))))
    return " ".join(parts)


def check_page(html_path: Path, binary: str, screenshot_path: Path | None = None,
               timeout: float = 60.0, settle_s: float = 0.5,
               max_height: int = 20000, evaluate: tuple[str, ...] | list[str] = ()) -> PageCheck:
    """Load ``html_path`` in headless Chromium and collect what happened.

    Parameters
    ----------
    html_path : Path
        Local HTML file.
    binary : str
        Chromium executable (see :func:`find_chromium`).
    screenshot_path : Path, optional
        Where to write the full-page PNG; default ``html_path`` with suffix
        ``.png``.
    timeout : float
        Seconds allowed for start-up and for the page load.
    settle_s : float
        Seconds to keep listening for late events after ``load``.
    max_height : int
        Cap on the screenshot height in CSS pixels.
    evaluate : sequence of str
        JavaScript expressions evaluated in the loaded page (after ``load``,
        before the screenshot), e.g. layout measurements; their values land in
        :attr:`PageCheck.values`.  A page without scripts still runs these: they
        are the browser's, not the page's.

    Returns
    -------
    PageCheck

    Raises
    ------
    RuntimeError, TimeoutError, ConnectionError
        The browser could not be started or driven.
    """
    html_path = Path(html_path).resolve()
    page_url = html_path.as_uri()
    shot = Path(screenshot_path) if screenshot_path else html_path.with_suffix(".png")
    result = PageCheck()
    state = {"loaded": False, "session": None}

    def on_event(event: dict) -> None:
        method, params = event.get("method"), event.get("params", {})
        if event.get("sessionId") not in (None, state["session"]):
            return
        if method == "Network.requestWillBeSent":
            url = params.get("request", {}).get("url", "")
            if not url.startswith("data:") and not _same_document(url, page_url):
                result.requests.append(url)
        elif method == "Runtime.consoleAPICalled" and params.get("type") in ("error", "assert"):
            result.console_errors.append(f"console.{params['type']}: {_console_text(params)}")
        elif method == "Runtime.exceptionThrown":
            details = params.get("exceptionDetails", {})
            desc = details.get("exception", {}).get("description") or details.get("text", "")
            result.console_errors.append(f"exception: {desc}")
        elif method == "Log.entryAdded":
            entry = params.get("entry", {})
            if entry.get("level") == "error":
                result.console_errors.append(f"log: {entry.get('text', '')} {entry.get('url', '')}".strip())
        elif method == "Page.loadEventFired":
            state["loaded"] = True

    with tempfile.TemporaryDirectory(prefix="parity-chromium-", ignore_cleanup_errors=True) as profile:
        proc, reader, ws_url = _start_browser(binary, profile, timeout)
        ws = None
        try:
            ws = WebSocket(ws_url, timeout=timeout)
            cdp = CDPClient(ws, on_event)
            targets = cdp.call("Target.getTargets")["targetInfos"]
            pages = [t for t in targets if t.get("type") == "page"]
            target = (pages[0]["targetId"] if pages else
                      cdp.call("Target.createTarget", {"url": "about:blank"})["targetId"])
            session = cdp.call("Target.attachToTarget",
                               {"targetId": target, "flatten": True})["sessionId"]
            state["session"] = session
            for domain in ("Network", "Runtime", "Log", "Page"):
                cdp.call(f"{domain}.enable", session=session)
            nav = cdp.call("Page.navigate", {"url": page_url}, session=session, timeout=timeout)
            if nav.get("errorText"):
                raise RuntimeError(f"navigation to {page_url} failed: {nav['errorText']}")
            if not cdp.pump(lambda: state["loaded"], timeout):
                raise TimeoutError(f"{page_url}: no load event within {timeout} s")
            cdp.pump(lambda: False, settle_s)
            for expression in evaluate:
                answer = cdp.call("Runtime.evaluate", {"expression": expression, "returnByValue": True},
                                  session=session, timeout=timeout)
                if "exceptionDetails" in answer:
                    raise RuntimeError(f"evaluating {expression!r} failed: {answer['exceptionDetails']}")
                result.values[expression] = answer.get("result", {}).get("value")
            metrics = cdp.call("Page.getLayoutMetrics", session=session)
            size = metrics.get("cssContentSize") or metrics.get("contentSize") or {}
            width = max(int(size.get("width", 1360)), 1)
            height = min(max(int(size.get("height", 900)), 1), max_height)
            shot_data = cdp.call("Page.captureScreenshot", {
                "format": "png", "captureBeyondViewport": True,
                "clip": {"x": 0, "y": 0, "width": width, "height": height, "scale": 1},
            }, session=session, timeout=timeout)["data"]
            shot.parent.mkdir(parents=True, exist_ok=True)
            shot.write_bytes(base64.b64decode(shot_data))
            result.screenshot_path = shot
        finally:
            if ws is not None:
                ws.close()
            _stop_browser(proc, reader)
    return result
