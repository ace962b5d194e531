"""JSONL channel: append one body per line, flushed and fsynced before it counts as sent."""

from __future__ import annotations

import contextlib
import json
import os
import threading
from pathlib import Path

from daemon.config import ChannelConfig
from daemon.notify.channels import DeliveryFailed, Message

# Two channels (or a test and the daemon's thread) may write one file: lines never interleave.
_LOCKS: dict[str, threading.Lock] = {}
_LOCKS_GUARD = threading.Lock()


def _lock_for(path: Path) -> threading.Lock:
    with _LOCKS_GUARD:
        return _LOCKS.setdefault(str(path), threading.Lock())


class JsonlSender:
    """Appends with one write() on an O_APPEND descriptor, then fsync; a line that could
    not be written whole is cut off again."""

    def __init__(self, channel: ChannelConfig) -> None:
        self.path = Path(channel.options["path"])

    def send(self, message: Message) -> None:
        line = json.dumps(message.body, ensure_ascii=False, separators=(",", ":")) + "\n"
        data = line.encode("utf-8")
        try:
            with _lock_for(self.path):
                fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
                try:
                    end = os.fstat(fd).st_size  # where this line starts (writes hold the lock)
                    try:
                        view = memoryview(data)
                        while view:
                            view = view[os.write(fd, view):]
                        os.fsync(fd)
                    except OSError:
                        # a full disk takes the part of the line that fits, then fails:
                        # the part is cut off again, or the retry would append the whole
                        # line after it and leave a line that is no JSON
                        with contextlib.suppress(OSError):
                            os.ftruncate(fd, end)
                        raise
                finally:
                    os.close(fd)
        except OSError as exc:
            raise DeliveryFailed(f"{self.path}: cannot append: {exc.strerror or exc}") from None

    def close(self) -> None:
        pass
