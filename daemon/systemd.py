"""The sd_notify datagram protocol, written with the stdlib."""

from __future__ import annotations

import os
import socket
import threading
import time
from collections.abc import Callable, Mapping

import structlog

log = structlog.get_logger(__name__)


class SystemdNotifier:
    """Sends service state to systemd over $NOTIFY_SOCKET; does nothing when it is unset."""

    def __init__(self, environ: Mapping[str, str]) -> None:
        self.address = _notify_address(environ.get("NOTIFY_SOCKET", ""))
        self.watchdog_interval = _watchdog_interval(environ, os.getpid())

    @classmethod
    def from_environ(cls) -> SystemdNotifier:
        """Build a notifier from this process's environment (the only place it is read)."""
        return cls(os.environ)

    @property
    def enabled(self) -> bool:
        """Whether systemd is listening for notifications."""
        return self.address is not None

    def send(self, *assignments: str) -> bool:
        """Send `KEY=value` assignments in one datagram; True if it was delivered."""
        for assignment in assignments:
            # A newline would smuggle in another assignment; a missing "=" is ignored by systemd.
            if "=" not in assignment or "\n" in assignment:
                raise ValueError(f"not a single-line KEY=value assignment: {assignment!r}")
        if self.address is None or not assignments:
            return False
        payload = "\n".join(assignments).encode()
        try:
            # A fresh socket per message, as libsystemd does: nothing to share between threads,
            # nothing to reconnect after systemd restarts.
            with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
                sock.sendto(payload, self.address)
        except OSError as error:
            # Losing a notification must not take the daemon down; systemd's timeouts will tell.
            log.warning(
                "sd_notify_failed",
                notify_socket=_printable(self.address),
                message=payload.decode(),
                error=str(error),
            )
            return False
        return True

    def ready(self, status: str | None = None) -> bool:
        """Tell systemd start-up (or a reload) is complete."""
        return self.send("READY=1", *_status(status))

    def status(self, text: str) -> bool:
        """Set the one-line status shown by `systemctl status`."""
        return self.send(*_status(text))

    def reloading(self, status: str | None = None) -> bool:
        """Tell systemd a configuration reload has begun; follow with ready()."""
        # systemd >= 253 (Type=notify-reload) requires the timestamp to match RELOADING=1 to
        # the SIGHUP it sent; older versions ignore it, so it is always sent.
        return self.send("RELOADING=1", f"MONOTONIC_USEC={monotonic_usec()}", *_status(status))

    def stopping(self, status: str | None = None) -> bool:
        """Tell systemd the service is shutting down."""
        return self.send("STOPPING=1", *_status(status))

    def watchdog(self) -> bool:
        """Ping the watchdog; does nothing unless the watchdog is armed for this process."""
        if self.watchdog_interval is None:
            return False
        return self.send("WATCHDOG=1")


class Watchdog(threading.Thread):
    """Daemon thread pinging WATCHDOG=1 every interval while `is_healthy()` returns True."""

    def __init__(
        self,
        notifier: SystemdNotifier,
        is_healthy: Callable[[], bool],
        stop_event: threading.Event,
    ) -> None:
        # Daemon thread: a wedged shutdown must not be kept alive by the pinger.
        super().__init__(name="systemd-watchdog", daemon=True)
        self.notifier = notifier
        self.is_healthy = is_healthy
        # Not `_stop`: threading.Thread already has a private method of that name.
        self.stop_event = stop_event

    def run(self) -> None:
        """Ping until the stop event is set; withhold pings while unhealthy."""
        interval = self.notifier.watchdog_interval
        if interval is None:
            return
        was_healthy = True
        while not self.stop_event.is_set():
            healthy = self._check_health()
            # Log transitions only; withholding pings is how systemd learns we are stuck,
            # and it restarts us once WatchdogSec passes without one.
            if was_healthy and not healthy:
                log.warning("watchdog_withheld", reason="is_healthy() returned False")
            elif healthy and not was_healthy:
                log.info("watchdog_resumed")
            was_healthy = healthy
            if healthy:
                self.notifier.watchdog()
            # Event.wait rather than sleep so that stopping does not wait out the interval.
            self.stop_event.wait(interval)

    def _check_health(self) -> bool:
        try:
            return bool(self.is_healthy())
        except Exception:
            # A failing health check is an unhealthy service, not a reason to kill the pinger.
            log.exception("watchdog_health_check_failed")
            return False


def monotonic_usec() -> int:
    """CLOCK_MONOTONIC in microseconds, the clock systemd compares MONOTONIC_USEC against."""
    # time.monotonic() does not promise which clock it reads; systemd needs this one.
    return time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000


def _status(text: str | None) -> tuple[str, ...]:
    if text is None:
        return ()
    # STATUS= is a single line: a newline would end it and start a bogus assignment.
    return ("STATUS=" + " ".join(line.strip() for line in text.splitlines() if line.strip()),)


def _notify_address(value: str) -> str | None:
    if not value:
        return None
    if value.startswith("@"):
        # Linux abstract namespace: the name starts with a NUL byte instead of "@".
        return "\0" + value[1:]
    if value.startswith("/"):
        return value
    # libsystemd also understands vsock: addresses (systemd >= 254), which we have no use for.
    log.warning("notify_socket_unsupported", notify_socket=value)
    return None


def _watchdog_interval(environ: Mapping[str, str], pid: int) -> float | None:
    usec_text = environ.get("WATCHDOG_USEC", "")
    if not usec_text:
        return None
    pid_text = environ.get("WATCHDOG_PID", "")
    # WATCHDOG_PID names the process the watchdog is for; a child that inherited the
    # environment must not ping on its parent's behalf.
    if pid_text and _parse_int(pid_text) != pid:
        return None
    usec = _parse_int(usec_text)
    if usec is None or usec <= 0:
        log.warning("watchdog_usec_invalid", watchdog_usec=usec_text)
        return None
    # Half the timeout, as sd_watchdog_enabled(3) recommends, so one late ping is not fatal.
    return usec / 2 / 1_000_000


def _parse_int(text: str) -> int | None:
    try:
        return int(text)
    except ValueError:
        return None


def _printable(address: str) -> str:
    return "@" + address[1:] if address.startswith("\0") else address
