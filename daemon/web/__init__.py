"""`redline serve`: a read-only web view, an Atom feed and a JSON API over the record."""

from daemon.web.app import create_app

__all__ = ["create_app"]
