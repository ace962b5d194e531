"""The stylesheet and the icon, read once from the package; their URLs carry a content hash
so a browser that cached an old stylesheet for an hour still gets the new one."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from importlib import resources

_TYPES = {
    "redline.css": "text/css; charset=utf-8",
    "favicon.svg": "image/svg+xml",
}


@dataclass(frozen=True)
class Asset:
    body: bytes
    media_type: str
    digest: str

    @property
    def etag(self) -> str:
        return f'"{self.digest}"'


def _load() -> dict[str, Asset]:
    out = {}
    for name, media_type in _TYPES.items():
        body = resources.files("daemon.web").joinpath("static", name).read_bytes()
        out[name] = Asset(body, media_type, hashlib.sha256(body).hexdigest()[:12])
    return out


ASSETS = _load()


def asset_href(name: str) -> str:
    """/static/NAME?v=HASH: changes whenever the file does."""
    return f"/static/{name}?v={ASSETS[name].digest}"
