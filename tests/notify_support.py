"""What the notification tests share: real receivers on 127.0.0.1 (HTTP, SMTP), a clock the
tests move by hand, and real statement files that produce real events."""

from __future__ import annotations

import datetime as dt
import email
import email.policy
import re
import shutil
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from email.message import EmailMessage
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from daemon.config import Config, load_config
from daemon.ingest import Ingestor
from daemon.notify.dispatch import Dispatcher
from daemon.notify.outbox import DeliveryOutbox

START = dt.datetime(2026, 3, 2, 9, 30, tzinfo=dt.UTC)


class FakeClock:
    """A clock that moves only when the test says so."""

    def __init__(self, now: dt.datetime = START) -> None:
        self.now = now

    def __call__(self) -> dt.datetime:
        return self.now

    def advance(self, seconds: float) -> dt.datetime:
        self.now += dt.timedelta(seconds=seconds)
        return self.now

    def set(self, when: dt.datetime) -> None:
        self.now = when


def wait_until(predicate: Any, timeout: float = 10.0, what: str = "condition") -> None:
    """Poll `predicate` until it is true (bounded): for state another thread commits."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        threading.Event().wait(0.01)


def sample_files(sample: Path, n: int) -> list[Path]:
    """The first `n` real statement files of the sample, in a stable order."""
    return sorted((sample / "current").rglob("*.md"))[:n]


def copy_statements(sample: Path, root: Path, n: int) -> list[Path]:
    """Copy `n` real statements into the watched folder `root`."""
    out = []
    for src in sample_files(sample, n):
        dst = root / src.parent.name / src.name
        dst.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(src, dst)
        out.append(dst)
    return out


def edit_one_word(path: Path, new_word: str = "Zanzibar") -> str:
    """Replace one word a reader sees in the body by `new_word`; return the old word.

    The word occurs once in the file and once in the rendered text, so it is neither in the
    front matter nor inside a link target or an HTML attribute.
    """
    from daemon.text import markdown_to_text

    text = path.read_text(encoding="utf-8")
    end = text.index("\n---", 3) + 4
    body = text[end:]
    shown = markdown_to_text(body)
    for m in re.finditer(r"(?<![\w’'/.-])([A-Za-z]{7,})(?![\w’'/-])", body):
        word = m.group(1)
        if text.count(word) == 1 and len(re.findall(rf"\b{word}\b", shown)) == 1:
            path.write_text(text[:end] + body[:m.start()] + new_word + body[m.end():],
                            encoding="utf-8")
            return word
    raise AssertionError(f"no editable word in {path}")


def config_for(tmp_path: Path, db_url: str, channels: str,
               environ: dict[str, str] | None = None, schedule: str = "") -> Config:
    """A real config.toml with these [[channels]] tables, loaded like the CLI does."""
    from conftest import write_config

    cfg = write_config(tmp_path, db_url, [tmp_path / "statements"],
                       extra=(f"[schedule]\n{schedule}\n\n" if schedule else "") + channels)
    return load_config(cfg, environ or {})


def ingestor(engine: sa.Engine, config: Config, clock: FakeClock) -> Ingestor:
    return Ingestor(engine, config.watch, DeliveryOutbox(config.channels), clock=clock)


def dispatch_once(engine: sa.Engine, config: Config, clock: FakeClock) -> int:
    """One dispatcher delivering what is due, waited for, then closed; the attempts made."""
    d = Dispatcher(engine, config, clock=clock, instance_id="test:1")
    try:
        return d.dispatch_due(wait=10)
    finally:
        d.close()


def rows(engine: sa.Engine, sql: str, **params: object) -> list[sa.Row[Any]]:
    with engine.connect() as conn:
        return list(conn.execute(sa.text(sql), params))


@dataclass
class Received:
    path: str
    headers: dict[str, str]
    body: bytes
    at: float = field(default_factory=time.monotonic)


class HttpReceiver:
    """Records every POST; answers with the scripted status codes, then `default_status`.

    `hold=True` makes it accept requests but never answer until `release()` (a receiver
    that hangs); `failure_headers` are sent with every answer that is not a success.
    """

    def __init__(self, statuses: list[int] | None = None, default_status: int = 200,
                 hold: bool = False, failure_headers: dict[str, str] | None = None) -> None:
        self.statuses = list(statuses or [])
        self.failure_headers = dict(failure_headers or {})
        self.default_status = default_status
        self.requests: list[Received] = []
        self.cond = threading.Condition()
        self.released = threading.Event()
        if not hold:
            self.released.set()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self) -> None:  # noqa: N802 - http.server's naming
                length = int(self.headers.get("Content-Length", "0"))
                body = self.rfile.read(length)
                with receiver.cond:
                    receiver.requests.append(Received(self.path, dict(self.headers), body))
                    status = (receiver.statuses.pop(0) if receiver.statuses
                              else receiver.default_status)
                    receiver.cond.notify_all()
                receiver.released.wait(30)
                payload = b"ok" if status < 300 else b"scripted failure"
                self.send_response(status)
                for name, value in (receiver.failure_headers if status >= 300 else {}).items():
                    self.send_header(name, value)
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> HttpReceiver:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.released.set()
        self.server.shutdown()
        self.server.server_close()

    def release(self) -> None:
        self.released.set()

    def wait_for(self, n: int, timeout: float = 10.0) -> list[Received]:
        """Wait until `n` requests arrived (bounded); return them."""
        deadline = time.monotonic() + timeout
        with self.cond:
            while len(self.requests) < n:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(f"expected {n} requests, got {len(self.requests)}")
                self.cond.wait(left)
            return list(self.requests)


class TrickleReceiver:
    """Reads each request, then answers a byte at a time and never finishes: the status
    line, then header lines for ever, one byte every `interval` seconds. Every read of the
    client gets data well within any timeout, so only a limit on the whole attempt ends it.
    """

    def __init__(self, interval: float = 0.05) -> None:
        self.interval = interval
        self.requests = 0
        self.stop = threading.Event()
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(8)
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}/hook"
        self.thread = threading.Thread(target=self._accept, daemon=True)

    def __enter__(self) -> TrickleReceiver:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.sock.close()

    def _accept(self) -> None:
        while not self.stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self._answer, args=(conn,), daemon=True).start()

    def _answer(self, conn: socket.socket) -> None:
        with conn:
            data = b""
            while b"\r\n\r\n" not in data:
                chunk = conn.recv(65536)
                if not chunk:
                    return
                data += chunk
            self.requests += 1
            answer = b"HTTP/1.1 200 OK\r\n"
            n = 0
            while not self.stop.wait(self.interval):
                if not answer:
                    n += 1
                    answer = f"X-Slow-{n}: still coming\r\n".encode()
                try:
                    conn.sendall(answer[:1])
                except OSError:
                    return
                answer = answer[1:]


def closed_port() -> int:
    """A local port nothing listens on."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class SmtpReceiver:
    """aiosmtpd on 127.0.0.1, keeping every message it receives."""

    def __init__(self, refuse: dict[str, str] | None = None,
                 **controller_kwargs: Any) -> None:
        """`refuse`: recipient address -> the reply that refuses it (`550 5.1.1 unknown`)."""
        from aiosmtpd.controller import Controller

        self.messages: list[EmailMessage] = []
        self.envelopes: list[Any] = []
        self.cond = threading.Condition()
        receiver = self
        refusals = dict(refuse or {})

        class Handler:
            async def handle_RCPT(self, server: Any, session: Any, envelope: Any,  # noqa: N802
                                  address: str, rcpt_options: list[str]) -> str:
                if address in refusals:
                    return refusals[address]
                envelope.rcpt_tos.append(address)
                return "250 OK"

            async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:  # noqa: N802
                msg = email.message_from_bytes(envelope.content, policy=email.policy.default)
                with receiver.cond:
                    receiver.envelopes.append(envelope)
                    receiver.messages.append(msg)  # type: ignore[arg-type]
                    receiver.cond.notify_all()
                return "250 OK"

        self.port = closed_port()
        self.controller = Controller(Handler(), hostname="127.0.0.1", port=self.port,
                                     **controller_kwargs)

    def __enter__(self) -> SmtpReceiver:
        self.controller.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.controller.stop()

    def wait_for(self, n: int, timeout: float = 10.0) -> list[EmailMessage]:
        deadline = time.monotonic() + timeout
        with self.cond:
            while len(self.messages) < n:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(f"expected {n} messages, got {len(self.messages)}")
                self.cond.wait(left)
            return list(self.messages)


@contextmanager
def http_receiver(**kwargs: Any) -> Iterator[HttpReceiver]:
    with HttpReceiver(**kwargs) as r:
        yield r
