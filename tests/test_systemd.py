"""Tests for daemon.systemd against real AF_UNIX datagram sockets, and for the unit file."""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from structlog.testing import capture_logs

from daemon.systemd import SystemdNotifier, Watchdog, monotonic_usec

UNIT = Path(__file__).resolve().parent.parent / "systemd" / "redline.service"
INSTALLED_EXEC = "/opt/redline/.venv/bin/redline"
# Measured with systemd 252 on the unit as committed: 1.3. A change that loosens the
# sandbox shows up here before it reaches a server.
MAX_EXPOSURE = 1.5
# Bound for every wait on the socket; the happy path never comes near it.
TIMEOUT = 5.0


@pytest.fixture
def listener(tmp_path: Path) -> Iterator[tuple[socket.socket, str]]:
    """A datagram socket bound in tmp_path, standing in for systemd's notify socket."""
    path = str(tmp_path / "notify")
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind(path)
        sock.settimeout(TIMEOUT)
        yield sock, path


def receive(sock: socket.socket) -> str:
    """The next datagram, waiting at most TIMEOUT."""
    return sock.recv(4096).decode()


def pending(sock: socket.socket) -> list[str]:
    """Every datagram already queued, without waiting."""
    # sendto() on a Unix datagram socket has queued the message by the time it returns,
    # so a non-blocking read sees everything sent so far.
    messages = []
    sock.setblocking(False)
    try:
        while True:
            messages.append(sock.recv(4096).decode())
    except BlockingIOError:
        return messages
    finally:
        sock.settimeout(TIMEOUT)


class HealthProbe:
    """A settable is_healthy() callable that lets a test wait for the watchdog to consult it."""

    def __init__(self) -> None:
        self.healthy = True
        self.calls = 0
        self.refusals = 0
        self._changed = threading.Condition()

    def __call__(self) -> bool:
        with self._changed:
            self.calls += 1
            if not self.healthy:
                self.refusals += 1
            self._changed.notify_all()
            return self.healthy

    def set(self, healthy: bool) -> None:
        with self._changed:
            self.healthy = healthy

    def wait_for(self, *, calls: int = 0, refusals: int = 0) -> None:
        with self._changed:
            reached = self._changed.wait_for(
                lambda: self.calls >= calls and self.refusals >= refusals, TIMEOUT
            )
        assert reached, f"watchdog consulted is_healthy {self.calls} times, {self.refusals} no"


StartWatchdog = Callable[[SystemdNotifier, Callable[[], bool]], Watchdog]


def stop(thread: Watchdog) -> None:
    """Stop a Watchdog thread and wait for it to end."""
    thread.stop_event.set()
    thread.join(TIMEOUT)
    assert not thread.is_alive()


@pytest.fixture
def run_watchdog() -> Iterator[StartWatchdog]:
    """Start Watchdog threads for a test and always stop them afterwards."""
    started: list[Watchdog] = []

    def start(notifier: SystemdNotifier, is_healthy: Callable[[], bool]) -> Watchdog:
        thread = Watchdog(notifier, is_healthy, threading.Event())
        thread.start()
        started.append(thread)
        return thread

    yield start
    for thread in started:
        stop(thread)


def test_ready_sends_ready(listener: tuple[socket.socket, str]) -> None:
    """ready() sends exactly READY=1."""
    sock, path = listener
    assert SystemdNotifier({"NOTIFY_SOCKET": path}).ready() is True
    assert receive(sock) == "READY=1"


def test_ready_with_status_is_one_datagram(listener: tuple[socket.socket, str]) -> None:
    """ready(status=...) sends READY=1 and STATUS= together in a single datagram."""
    sock, path = listener
    SystemdNotifier({"NOTIFY_SOCKET": path}).ready(status="watching 3 folders")
    assert receive(sock) == "READY=1\nSTATUS=watching 3 folders"
    assert pending(sock) == []


def test_status_sends_status(listener: tuple[socket.socket, str]) -> None:
    """status() sends STATUS=<text>."""
    sock, path = listener
    SystemdNotifier({"NOTIFY_SOCKET": path}).status("ingesting /srv/statements")
    assert receive(sock) == "STATUS=ingesting /srv/statements"


def test_status_is_flattened_to_one_line(listener: tuple[socket.socket, str]) -> None:
    """Line breaks in a status become spaces so they cannot inject assignments."""
    sock, path = listener
    SystemdNotifier({"NOTIFY_SOCKET": path}).status("error:\nREADY=1\r\n  retrying\n")
    assert receive(sock) == "STATUS=error: READY=1 retrying"


def test_reloading_carries_monotonic_usec(listener: tuple[socket.socket, str]) -> None:
    """reloading() sends RELOADING=1 and the current CLOCK_MONOTONIC in µs in one datagram."""
    sock, path = listener
    before = time.monotonic_ns() // 1000
    SystemdNotifier({"NOTIFY_SOCKET": path}).reloading()
    after = time.monotonic_ns() // 1000
    match = re.fullmatch(r"RELOADING=1\nMONOTONIC_USEC=(\d+)", receive(sock))
    assert match is not None
    assert before <= int(match.group(1)) <= after


def test_monotonic_usec_matches_time_monotonic() -> None:
    """monotonic_usec() reads the clock time.monotonic_ns() reads on Linux."""
    before = time.monotonic_ns() // 1000
    assert before <= monotonic_usec() <= time.monotonic_ns() // 1000


def test_stopping_sends_stopping(listener: tuple[socket.socket, str]) -> None:
    """stopping(status=...) sends STOPPING=1 with the status."""
    sock, path = listener
    SystemdNotifier({"NOTIFY_SOCKET": path}).stopping(status="draining the outbox")
    assert receive(sock) == "STOPPING=1\nSTATUS=draining the outbox"


def test_watchdog_sends_ping(listener: tuple[socket.socket, str]) -> None:
    """watchdog() sends WATCHDOG=1 when the watchdog is armed."""
    sock, path = listener
    SystemdNotifier({"NOTIFY_SOCKET": path, "WATCHDOG_USEC": "30000000"}).watchdog()
    assert receive(sock) == "WATCHDOG=1"


def test_lifecycle_arrives_in_order(listener: tuple[socket.socket, str]) -> None:
    """A start, reload and stop sequence arrives as separate datagrams in the order sent."""
    sock, path = listener
    notifier = SystemdNotifier({"NOTIFY_SOCKET": path, "WATCHDOG_USEC": "30000000"})
    notifier.status("migrating")
    notifier.ready(status="running")
    notifier.watchdog()
    notifier.reloading()
    notifier.ready()
    notifier.stopping()
    received = [receive(sock) for _ in range(6)]
    assert received[:3] == ["STATUS=migrating", "READY=1\nSTATUS=running", "WATCHDOG=1"]
    assert received[3].startswith("RELOADING=1\nMONOTONIC_USEC=")
    assert received[4:] == ["READY=1", "STOPPING=1"]


def test_abstract_namespace_address() -> None:
    """A NOTIFY_SOCKET starting with @ reaches a socket in the abstract namespace."""
    name = f"redline-test-{uuid.uuid4().hex}"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind("\0" + name)
        sock.settimeout(TIMEOUT)
        assert SystemdNotifier({"NOTIFY_SOCKET": "@" + name}).ready() is True
        assert receive(sock) == "READY=1"


def test_send_joins_assignments(listener: tuple[socket.socket, str]) -> None:
    """send() puts several assignments in one newline-separated datagram."""
    sock, path = listener
    SystemdNotifier({"NOTIFY_SOCKET": path}).send("READY=1", "STATUS=up", "ERRNO=0")
    assert receive(sock) == "READY=1\nSTATUS=up\nERRNO=0"


@pytest.mark.parametrize("assignment", ["READY", "STATUS=a\nREADY=1"])
def test_send_rejects_malformed_assignment(assignment: str) -> None:
    """send() refuses an assignment without '=' or with a newline (a programming error)."""
    with pytest.raises(ValueError, match="KEY=value"):
        SystemdNotifier({}).send(assignment)


def test_noop_without_notify_socket(listener: tuple[socket.socket, str]) -> None:
    """Without NOTIFY_SOCKET nothing is sent and every call reports False."""
    sock, _ = listener
    notifier = SystemdNotifier({"WATCHDOG_USEC": "30000000"})
    assert notifier.enabled is False
    results = [
        notifier.ready(status="x"),
        notifier.status("x"),
        notifier.reloading(),
        notifier.stopping(),
        notifier.watchdog(),
    ]
    assert results == [False] * 5
    assert pending(sock) == []


def test_unsupported_address_is_a_noop() -> None:
    """A NOTIFY_SOCKET that is neither a path nor @name disables notifications with a log."""
    with capture_logs() as logs:
        notifier = SystemdNotifier({"NOTIFY_SOCKET": "vsock:2:1234"})
    assert notifier.enabled is False
    assert notifier.ready() is False
    assert [entry["event"] for entry in logs] == ["notify_socket_unsupported"]


def test_from_environ_reads_process_environment(
    listener: tuple[socket.socket, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """from_environ() picks NOTIFY_SOCKET and WATCHDOG_USEC up from os.environ."""
    sock, path = listener
    monkeypatch.setenv("NOTIFY_SOCKET", path)
    monkeypatch.setenv("WATCHDOG_USEC", "4000000")
    monkeypatch.delenv("WATCHDOG_PID", raising=False)
    notifier = SystemdNotifier.from_environ()
    assert notifier.watchdog_interval == 2.0
    notifier.ready()
    assert receive(sock) == "READY=1"


@pytest.mark.parametrize(
    ("environ", "interval"),
    [
        ({}, None),
        ({"WATCHDOG_USEC": "30000000"}, 15.0),
        ({"WATCHDOG_USEC": "200000"}, 0.1),
        ({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": str(os.getpid())}, 15.0),
        ({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": str(os.getpid() + 1)}, None),
        ({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": "not-a-pid"}, None),
        ({"WATCHDOG_USEC": "0"}, None),
        ({"WATCHDOG_USEC": "soon"}, None),
    ],
)
def test_watchdog_interval(environ: dict[str, str], interval: float | None) -> None:
    """The ping interval is half of WATCHDOG_USEC, and None unless armed for this pid."""
    assert SystemdNotifier(environ).watchdog_interval == interval


def test_watchdog_pid_mismatch_sends_nothing(
    listener: tuple[socket.socket, str], run_watchdog: StartWatchdog
) -> None:
    """With WATCHDOG_PID naming another process, neither watchdog() nor the thread pings."""
    sock, path = listener
    notifier = SystemdNotifier(
        {"NOTIFY_SOCKET": path, "WATCHDOG_USEC": "200000", "WATCHDOG_PID": str(os.getpid() + 1)}
    )
    assert notifier.watchdog() is False
    probe = HealthProbe()
    thread = run_watchdog(notifier, probe)
    thread.join(TIMEOUT)
    assert not thread.is_alive()
    assert probe.calls == 0
    assert pending(sock) == []


def test_watchdog_thread_pings_at_half_the_timeout(
    listener: tuple[socket.socket, str], run_watchdog: StartWatchdog
) -> None:
    """While healthy the thread sends WATCHDOG=1 about every WATCHDOG_USEC / 2."""
    sock, path = listener
    notifier = SystemdNotifier({"NOTIFY_SOCKET": path, "WATCHDOG_USEC": "200000"})
    thread = run_watchdog(notifier, HealthProbe())
    assert thread.daemon is True
    arrivals = []
    for _ in range(4):
        assert receive(sock) == "WATCHDOG=1"
        arrivals.append(time.monotonic())
    # Three intervals of 0.1 s; the lower bound allows for the first receive being late,
    # the upper one for a loaded machine.
    assert 0.2 <= arrivals[-1] - arrivals[0] < 3.0


def test_watchdog_thread_withholds_pings_while_unhealthy(
    listener: tuple[socket.socket, str], run_watchdog: StartWatchdog
) -> None:
    """Once is_healthy() returns False no more pings are sent, and they resume after."""
    sock, path = listener
    notifier = SystemdNotifier({"NOTIFY_SOCKET": path, "WATCHDOG_USEC": "200000"})
    probe = HealthProbe()
    with capture_logs() as logs:
        thread = run_watchdog(notifier, probe)
        assert receive(sock) == "WATCHDOG=1"
        probe.set(False)
        probe.wait_for(refusals=1)
        pending(sock)  # pings sent before the first refusal
        probe.wait_for(refusals=3)
        assert pending(sock) == []
        probe.set(True)
        assert receive(sock) == "WATCHDOG=1"
        stop(thread)
    events = [entry["event"] for entry in logs]
    assert events == ["watchdog_withheld", "watchdog_resumed"]


def test_watchdog_thread_treats_failing_check_as_unhealthy(
    listener: tuple[socket.socket, str], run_watchdog: StartWatchdog
) -> None:
    """An exception from is_healthy() withholds the ping and is logged, not raised."""
    sock, path = listener
    notifier = SystemdNotifier({"NOTIFY_SOCKET": path, "WATCHDOG_USEC": "200000"})
    calls = threading.Semaphore(0)

    def broken() -> bool:
        calls.release()
        raise RuntimeError("worker registry gone")

    with capture_logs() as logs:
        thread = run_watchdog(notifier, broken)
        for _ in range(2):
            assert calls.acquire(timeout=TIMEOUT)
        assert thread.is_alive()
        stop(thread)
    assert pending(sock) == []
    assert "watchdog_health_check_failed" in [entry["event"] for entry in logs]


def test_watchdog_thread_stops_promptly(
    listener: tuple[socket.socket, str], run_watchdog: StartWatchdog
) -> None:
    """Setting the stop event ends the thread without waiting out a long interval."""
    sock, path = listener
    notifier = SystemdNotifier({"NOTIFY_SOCKET": path, "WATCHDOG_USEC": "600000000"})
    thread = run_watchdog(notifier, HealthProbe())
    assert receive(sock) == "WATCHDOG=1"
    started = time.monotonic()
    stop(thread)
    assert time.monotonic() - started < 1.0


@pytest.mark.parametrize("gone", ["unlinked", "closed"])
def test_vanished_socket_does_not_raise(
    tmp_path: Path, gone: str, run_watchdog: StartWatchdog
) -> None:
    """Sending to a socket path that vanished (or lost its reader) logs and returns False."""
    path = str(tmp_path / "notify")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(path)
    sock.close()  # the file stays behind, refusing connections
    if gone == "unlinked":
        os.unlink(path)
    notifier = SystemdNotifier({"NOTIFY_SOCKET": path, "WATCHDOG_USEC": "200000"})
    with capture_logs() as logs:
        assert notifier.ready(status="up") is False
        probe = HealthProbe()
        thread = run_watchdog(notifier, probe)
        probe.wait_for(calls=2)
        assert thread.is_alive()
        stop(thread)
    failures = [entry for entry in logs if entry["event"] == "sd_notify_failed"]
    assert failures[0]["message"] == "READY=1\nSTATUS=up"
    assert failures[0]["notify_socket"] == path
    assert len(failures) >= 2  # the thread's pings failed too, and it carried on


# --- the unit file -------------------------------------------------------------------------

needs_systemd_analyze = pytest.mark.skipif(
    shutil.which("systemd-analyze") is None, reason="systemd-analyze is not on PATH"
)


@pytest.fixture
def unit_copy(tmp_path: Path) -> Path:
    """The unit in tmp_path with ExecStart pointing at an executable that exists here."""
    # verify checks that ExecStart's binary exists; /opt/redline is not installed here.
    executable = Path(sys.executable).parent / "redline"
    if not os.access(executable, os.X_OK):
        executable = tmp_path / "redline"
        executable.write_text("#!/bin/sh\nexit 0\n")
        executable.chmod(0o755)
    text = UNIT.read_text()
    assert INSTALLED_EXEC in text
    unit = tmp_path / "redline.service"
    unit.write_text(text.replace(INSTALLED_EXEC, str(executable)))
    return unit


def systemd_analyze(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    """Run systemd-analyze without a pager or colours, capturing its output."""
    env = {**os.environ, "SYSTEMD_PAGER": "", "SYSTEMD_COLORS": "0", "SYSTEMD_LOG_COLOR": "0"}
    return subprocess.run(
        ["systemd-analyze", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


@needs_systemd_analyze
def test_unit_passes_systemd_analyze_verify(unit_copy: Path) -> None:
    """`systemd-analyze verify` accepts the unit with no warnings about it."""
    result = systemd_analyze("verify", str(unit_copy), cwd=unit_copy.parent)
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    about_unit = [line for line in output.splitlines() if "redline" in line]
    assert about_unit == []


@needs_systemd_analyze
def test_unit_security_exposure_is_low(unit_copy: Path) -> None:
    """`systemd-analyze security --offline=true` rates the unit at most MAX_EXPOSURE."""
    result = systemd_analyze("security", "--offline=true", str(unit_copy), cwd=unit_copy.parent)
    output = result.stdout + result.stderr
    if result.returncode != 0 and "offline" in output.lower():
        pytest.skip(f"systemd-analyze security does not support --offline: {output.strip()}")
    assert result.returncode == 0, output
    match = re.search(r"Overall exposure level for redline\.service: (\d+\.\d+)", output)
    assert match is not None, output
    assert float(match.group(1)) <= MAX_EXPOSURE, output


def test_the_unit_restarts_failures_but_not_a_configuration_error(tmp_path: Path) -> None:
    """`redline run` with a bad configuration exits with a status the unit keeps systemd
    from restarting (it would fail again every RestartSec, forever); other failures, such as
    a database still unreachable after a minute (status 1), are restarted."""
    settings: dict[str, list[str]] = {}
    for line in UNIT.read_text().splitlines():
        key, sep, value = line.partition("=")
        if sep and not line.startswith("#"):
            settings.setdefault(key.strip(), []).append(value.strip())
    assert settings["Restart"] == ["on-failure"]
    prevented = {int(code) for value in settings["RestartPreventExitStatus"]
                 for code in value.split()}
    cfg = tmp_path / "config.toml"
    cfg.write_text(f'[watch]\npaths = ["{tmp_path}"]\ndebounce_ms = -1\n')
    result = subprocess.run([sys.executable, "-m", "daemon", "--config", str(cfg), "run"],
                            capture_output=True, text=True, timeout=60)
    assert "watch.debounce_ms" in result.stderr
    assert result.returncode in prevented and 1 not in prevented


@pytest.mark.parametrize("unit_name", ["redline.service", "redline-serve.service"])
def test_the_units_command_line_starts_the_service(unit_name: str, tmp_path: Path) -> None:
    """ExecStart, as the unit writes it (the installed binary replaced by this Python, the
    configuration file by one in tmp_path), gets as far as READY=1 and stops with 0 on
    SIGTERM. `--config` is an option of `redline` itself: given after the command, click
    refused it (exit 2, which RestartPreventExitStatus keeps failed), and the installed
    service never started."""
    import shlex

    unit = UNIT.parent / unit_name
    lines = [line for line in unit.read_text().splitlines() if line.startswith("ExecStart=")]
    assert len(lines) == 1
    argv = shlex.split(lines[0].removeprefix("ExecStart="))
    assert argv[0] == INSTALLED_EXEC and "/etc/redline/config.toml" in argv
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    (tmp_path / "statements").mkdir()
    cfg = tmp_path / "config.toml"
    cfg.write_text(f'[watch]\npaths = ["statements"]\n[database]\nurl = "sqlite:///r.db"\n'
                   f'[serve]\nport = {port}\n')
    environ = {k: v for k, v in os.environ.items()
               if k not in ("NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID",
                            "REDLINE_DATABASE_URL", "REDLINE_CONFIG")}
    subprocess.run([sys.executable, "-m", "daemon", "--config", str(cfg), "db", "upgrade"],
                   check=True, capture_output=True, env=environ, timeout=60)
    args = [str(cfg) if a == "/etc/redline/config.toml" else a for a in argv[1:]]
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind(str(tmp_path / "notify"))
        sock.settimeout(0.5)
        proc = subprocess.Popen([sys.executable, "-m", "daemon", *args],
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                env={**environ, "NOTIFY_SOCKET": str(tmp_path / "notify")})
        try:
            deadline = time.monotonic() + 60
            ready = ""
            while not ready.startswith("READY=1"):
                if proc.poll() is not None or time.monotonic() > deadline:
                    proc.kill()
                    raise AssertionError(f"{unit_name}: no READY=1; exit status "
                                         f"{proc.wait()}: {proc.communicate()[0]}")
                try:
                    ready = sock.recv(4096).decode()
                except TimeoutError:
                    continue
            proc.send_signal(signal.SIGTERM)
            assert proc.wait(30) == 0, proc.communicate()[0]
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
