"""Which paths are statements: patterns, built-in ignores, and walking the watched folders.

`PathFilter` is a pure callable shared by the scanner and the watcher, so both agree on
what counts as a statement file.
"""

from __future__ import annotations

import fnmatch
import os
import re
import stat as stat_mode
import time
from collections.abc import Iterator
from dataclasses import dataclass
from functools import cached_property
from pathlib import PurePath

# Editor temp, backup and swap files, and download partials: never statements.
BUILTIN_IGNORES = (
    ".*", "*~", "#*#", "*.swp", "*.swo", "*.swx", "*.swn", "*.tmp", "*.temp", "*.bak",
    "*.orig", "*.rej", "*.part", "*.crdownload", "*.kate-swp", "4913", "*.sb-*", "~$*",
)


@dataclass(frozen=True)
class PathFilter:
    """Decides whether a path is a statement file: matches a pattern, no ignore matches it,
    and no folder on the way (below the root) is hidden."""

    patterns: tuple[str, ...]
    ignore: tuple[str, ...] = ()

    def __call__(self, path: str) -> bool:
        name = os.path.basename(path)
        return self._wanted.matches(path, name) and not self._ignored.matches(path, name)

    @cached_property
    def _wanted(self) -> _Patterns:
        return _Patterns(self.patterns)

    @cached_property
    def _ignored(self) -> _Patterns:
        return _Patterns(BUILTIN_IGNORES + self.ignore)

    def folder_ok(self, name: str) -> bool:
        """Hidden folders (.git, .cache, ...) are never descended into."""
        return not name.startswith(".") and not any(
            fnmatch.fnmatchcase(name, p) for p in self.ignore if "/" not in p)


class _Patterns:
    """Patterns on the file name, tested together (a scan tests every file against all of
    them): the common shapes without a regex — "*.md" as a suffix, ".*" as a prefix, "4913"
    as a whole name — the others joined into one compiled regex; patterns with a "/" are
    matched against the path one by one."""

    def __init__(self, patterns: tuple[str, ...]) -> None:
        names = [p for p in patterns if "/" not in p]
        shapes = {p: _shape(p) for p in names}
        self._suffixes = tuple(p[1:] for p in names if shapes[p] == "suffix")
        self._prefixes = tuple(p[:-1] for p in names if shapes[p] == "prefix")
        self._exact = frozenset(p for p in names if shapes[p] == "exact")
        rest = [p for p in names if shapes[p] is None]
        self._names = re.compile("|".join(fnmatch.translate(p) for p in rest)).match \
            if rest else None
        self._paths = [p for p in patterns if "/" in p]

    def matches(self, path: str, name: str) -> bool:
        if name.endswith(self._suffixes) or name.startswith(self._prefixes) or \
                name in self._exact:
            return True
        if self._names is not None and self._names(name):
            return True
        return any(_match(path, name, p) for p in self._paths)


def _magic(pattern: str) -> bool:
    """Whether fnmatch would read anything in `pattern` other than as itself."""
    return "*" in pattern or "?" in pattern or "[" in pattern


def _shape(pattern: str) -> str | None:
    """"suffix" for *literal, "prefix" for literal*, "exact" for a literal, else None."""
    if not _magic(pattern):
        return "exact"
    if pattern[0] == "*" and not _magic(pattern[1:]):
        return "suffix"
    if pattern[-1] == "*" and not _magic(pattern[:-1]):
        return "prefix"
    return None


def _match(path: str, name: str, pattern: str) -> bool:
    if "/" in pattern:
        return PurePath(path).full_match(pattern) if hasattr(PurePath, "full_match") else \
            fnmatch.fnmatchcase(path, pattern) or fnmatch.fnmatchcase(path, "*/" + pattern)
    return fnmatch.fnmatchcase(name, pattern)


def identity(path: str) -> tuple[int, int] | None:
    """A file's or folder's (device, inode), following links; None when nothing is there.
    The same path naming another identity is another file: a database file restored over
    the open one, a file system mounted again on a watched folder."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_dev, st.st_ino


class OpenWriters:
    """Which files a process holds open for writing, as /proc tells it (Linux): what no
    event can say about a write begun before the watcher started. Only the processes this
    one may look into are seen (its user's, or all for root); elsewhere it finds none. The
    fds of every process are listed at most once per `fresh` seconds; their modes are read
    only for the files asked about."""

    def __init__(self, proc: str = "/proc", fresh: float = 1.0) -> None:
        self._proc = proc
        self._fresh = fresh
        self._listed_at = float("-inf")
        self._fds: dict[tuple[int, int], list[str]] = {}

    def holds(self, key: tuple[int, int]) -> bool:
        """Whether some process has the file (device, inode) open for writing."""
        now = time.monotonic()
        if now - self._listed_at > self._fresh:
            self._fds = self._list()
            self._listed_at = now
        for fd in self._fds.get(key, ()):
            try:
                with open(fd.replace("/fd/", "/fdinfo/", 1), encoding="ascii") as fh:
                    flags = next((int(line.split()[1], 8) for line in fh
                                  if line.startswith("flags:")), 0)
            except (OSError, ValueError, IndexError):
                continue  # the process or the fd is gone
            if flags & os.O_ACCMODE in (os.O_WRONLY, os.O_RDWR):
                return True
        return False

    def _list(self) -> dict[tuple[int, int], list[str]]:
        out: dict[tuple[int, int], list[str]] = {}
        own = str(os.getpid())
        try:
            pids = [e.name for e in os.scandir(self._proc) if e.name.isdigit() and e.name != own]
        except OSError:
            return out
        for pid in pids:
            base = f"{self._proc}/{pid}/fd"
            try:
                fds = os.listdir(base)
            except OSError:
                continue  # not ours to look into, or gone
            for fd in fds:
                try:
                    st = os.stat(f"{base}/{fd}")
                except OSError:
                    continue
                if stat_mode.S_ISREG(st.st_mode):
                    out.setdefault((st.st_dev, st.st_ino), []).append(f"{base}/{fd}")
        return out


def stored_path(path: str) -> str:
    """The path as the database stores it and a person reads it: `path` itself, except
    when its bytes are not UTF-8 (Linux allows any bytes in a name; Python gives them as
    surrogate escapes, which no database driver can send): then those bytes as \\xNN.
    Used wherever a path goes to the database or is compared with a stored path; the
    reader rejects such a file (bad_file_name) under this form. A name is checked for
    ASCII first: a few dozen nanoseconds per file."""
    if path.isascii():
        return path
    try:
        path.encode()
    except UnicodeEncodeError:
        return os.fsencode(path).decode("utf-8", "backslashreplace")
    return path


@dataclass(frozen=True)
class FoundFile:
    path: str
    size: int
    mtime_ns: int
    inode: int


def walk(root: str, accept: PathFilter, recursive: bool = True,
         unreadable: list[tuple[str, str]] | None = None) -> Iterator[FoundFile]:
    """Yield the statement files under `root` with their stat, without reading them.
    A folder that is there but cannot be listed (permission denied, an I/O error) is
    skipped, and added to `unreadable`, when given, with the reason: what it holds is
    unknown, not gone."""
    stack = [root]
    while stack:
        folder = stack.pop()
        try:
            with os.scandir(folder) as it:
                entries = list(it)
        except (FileNotFoundError, NotADirectoryError):
            continue
        except OSError as exc:
            if unreadable is not None:
                unreadable.append((folder, exc.strerror or type(exc).__name__))
            continue
        for entry in entries:
            try:
                if entry.is_dir(follow_symlinks=False):
                    if recursive and accept.folder_ok(entry.name):
                        stack.append(entry.path)
                    continue
                if not entry.is_file() or not accept(entry.path):
                    continue
                st = entry.stat()
            except OSError:
                continue
            yield FoundFile(entry.path, st.st_size, st.st_mtime_ns, st.st_ino)
