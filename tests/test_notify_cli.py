"""Tests for `redline notify test` and `redline deliveries` as a user runs them."""

from __future__ import annotations

import hashlib
import hmac
import json
from pathlib import Path

import pytest
import sqlalchemy as sa
from click.testing import CliRunner
from conftest import write_config
from notify_support import (
    FakeClock,
    HttpReceiver,
    closed_port,
    copy_statements,
    dispatch_once,
    ingestor,
    rows,
)

from daemon.cli import cli
from daemon.config import load_config
from daemon.notify.dispatch import Dispatcher
from daemon.store.engine import make_engine


def redline(cfg: Path, *args: str) -> tuple[int, str, str]:
    """Run `redline --config cfg ARGS`: exit code, stdout, stderr."""
    result = CliRunner().invoke(cli, ["--config", str(cfg), *args])
    return result.exit_code, result.stdout, result.stderr


def channels(hook_url: str, dead_url: str, jsonl: Path) -> str:
    return (f'[[channels]]\nname = "hook"\ntype = "webhook"\nurl = "{hook_url}"\n'
            f'secret_env = "HOOK_SECRET"\n\n'
            f'[[channels]]\nname = "broken"\ntype = "webhook"\nurl = "{dead_url}"\n\n'
            f'[[channels]]\nname = "archive"\ntype = "jsonl"\npath = "{jsonl}"\n'
            f'mode = "digest"\n\n')


def test_notify_test_reports_each_channel(tmp_path: Path, monkeypatch: pytest.MonkeyPatch
                                          ) -> None:
    """Every channel gets a message marked as a test (header, body, JSONL line); a channel
    that cannot be reached is reported with its error and the exit status is 1."""
    monkeypatch.setenv("HOOK_SECRET", "k")
    jsonl = tmp_path / "events.jsonl"
    with HttpReceiver() as rx:
        cfg = write_config(tmp_path, f"sqlite:///{tmp_path / 'r.db'}", extra=channels(
            rx.url, f"http://127.0.0.1:{closed_port()}/", jsonl))
        code, out, err = redline(cfg, "notify", "test")
        (req,) = rx.wait_for(1)
    assert code == 1, err
    lines = out.splitlines()
    assert lines[0] == "hook (webhook): ok, test message sent"
    assert lines[1].startswith("broken (webhook): FAILED: cannot reach the receiver")
    assert lines[2] == "archive (jsonl): ok, test message sent"
    assert req.headers["X-Redline-Event"] == "test"
    expected = "sha256=" + hmac.new(b"k", req.body, hashlib.sha256).hexdigest()
    assert req.headers["X-Redline-Signature-256"] == expected
    body = json.loads(req.body)
    assert body["test"] is True and body["type"] == "test" and "TEST" in body["message"]
    (line,) = jsonl.read_text().splitlines()
    assert json.loads(line)["test"] is True
    assert not (tmp_path / "r.db").exists()  # a test message touches no database


def test_notify_test_one_channel_as_json(tmp_path: Path, monkeypatch: pytest.MonkeyPatch
                                         ) -> None:
    """--channel sends to that channel only; --json prints the result."""
    monkeypatch.setenv("HOOK_SECRET", "k")
    with HttpReceiver() as rx:
        cfg = write_config(tmp_path, f"sqlite:///{tmp_path / 'r.db'}", extra=channels(
            rx.url, f"http://127.0.0.1:{closed_port()}/", tmp_path / "e.jsonl"))
        code, out, _ = redline(cfg, "notify", "test", "--channel", "hook", "--json")
        rx.wait_for(1)
    assert code == 0
    assert json.loads(out) == [{"channel": "hook", "type": "webhook", "ok": True,
                                "error": None}]
    assert not (tmp_path / "e.jsonl").exists()


def test_notify_test_errors(tmp_path: Path) -> None:
    """An unknown channel, or none configured: one error line and exit 2."""
    cfg = write_config(tmp_path, f"sqlite:///{tmp_path / 'r.db'}")
    code, out, err = redline(cfg, "notify", "test")
    assert (code, out) == (2, "")
    assert err == f"redline: error: no channels are configured: add a [[channels]] table to {cfg}\n"
    code, out, err = redline(cfg, "notify", "test", "--channel", "nope")
    assert (code, out, err) == (
        2, "", "redline: error: no channel named 'nope' in the configuration\n")


def test_deliveries_lists_state_and_retry_requeues_dead(
        db_url: str, sample: Path, tmp_path: Path) -> None:
    """`deliveries` shows each delivery's state and error; `--retry` makes dead deliveries
    pending again with fresh attempts, and the next dispatch delivers them."""
    port = closed_port()
    cfg = write_config(tmp_path, db_url, extra=(
        f'[[channels]]\nname = "hook"\ntype = "webhook"\nurl = "http://127.0.0.1:{port}/"\n'
        'max_attempts = 1\n\n'))
    config = load_config(cfg, {})
    engine = make_engine(db_url)
    code, _, err = redline(cfg, "deliveries")  # migrates nothing: a read-only command
    assert code == 1 and "redline: error:" in err
    redline(cfg, "db", "upgrade")
    clock = FakeClock()
    paths = copy_statements(sample, tmp_path / "statements", 2)
    ingestor(engine, config, clock).process_paths([str(p) for p in paths])
    dispatch_once(engine, config, clock)
    code, out, _ = redline(cfg, "deliveries", "--status", "dead")
    assert code == 0
    lines = out.splitlines()
    assert lines[0] == "hook: 2 dead"
    assert lines[2].startswith("event 2 added → hook: dead, 1 attempt")
    assert lines[3].strip().startswith("https://")
    assert lines[4].strip().startswith("last error: cannot reach the receiver")
    code, out, _ = redline(cfg, "deliveries", "--json")
    listed = json.loads(out)
    assert [(r["event_id"], r["status"], r["attempts"]) for r in listed] == [
        (2, "dead", 1), (1, "dead", 1)]
    assert set(listed[0]) == {"event_id", "channel", "status", "attempts", "last_error",
                              "next_attempt_at", "delivered_at", "kind", "source_url"}
    code, out, _ = redline(cfg, "deliveries", "--retry")
    assert code == 0 and out.startswith("re-queued 2 dead deliveries")
    assert rows(engine, "SELECT DISTINCT status, attempts FROM delivery_status") == [
        ("pending", 0)]
    with HttpReceiver() as rx:
        cfg.write_text(cfg.read_text().replace(f"http://127.0.0.1:{port}/", rx.url))
        config = load_config(cfg, {})
        d = Dispatcher(engine, config, instance_id="test:2")
        try:
            d.dispatch_due(wait=10)
        finally:
            d.close()
        rx.wait_for(2)
    code, out, _ = redline(cfg, "deliveries", "--status", "delivered", "--json")
    assert [r["status"] for r in json.loads(out)] == ["delivered", "delivered"]
    code, out, err = redline(cfg, "deliveries", "--retry", "--status", "delivered")
    assert (code, err) == (2, "redline: error: --retry re-queues dead deliveries (or failed "
                              "ones with --status failed), not delivered ones\n")
    engine.dispose()


def test_retry_with_nothing_dead(engine: sa.Engine, db_url: str, tmp_path: Path) -> None:
    """--retry with no dead deliveries says so and succeeds; --json gives the count."""
    cfg = write_config(tmp_path, db_url)
    code, out, _ = redline(cfg, "deliveries", "--retry", "--json")
    assert code == 0 and json.loads(out) == {"requeued": 0, "status": "dead", "channel": None}
    code, out, _ = redline(cfg, "deliveries")
    assert (code, out) == (0, "no deliveries\n")


def test_status_names_deliveries_waiting_for_a_channel_no_longer_configured(
        db_url: str, sample: Path, tmp_path: Path) -> None:
    """A channel removed (or renamed) in config.toml keeps its undelivered rows: no instance
    with this configuration will send them (one with the channel still may), so `status`
    names them instead of counting them among the pending for ever without a word."""
    jsonl = tmp_path / "e.jsonl"
    both = (f'[[channels]]\nname = "archive"\ntype = "jsonl"\npath = "{jsonl}"\n\n'
            f'[[channels]]\nname = "old-hook"\ntype = "webhook"\n'
            f'url = "http://127.0.0.1:{closed_port()}/"\n\n')
    cfg = write_config(tmp_path, db_url, extra=both)
    copy_statements(sample, tmp_path / "statements", 2)
    code, _, err = redline(cfg, "ingest")
    assert code == 0, err
    deliveries = "deliveries: 4 pending, 0 failed, 0 dead, 0 delivered"
    code, out, err = redline(cfg, "status")
    assert code == 0 and deliveries in out.splitlines(), err
    cfg.write_text(cfg.read_text().replace(both, both.split("\n\n")[0] + "\n\n"))
    code, out, _ = redline(cfg, "status")
    assert code == 0
    assert f"{deliveries}; 2 waiting for channels not in this configuration: old-hook (2)" \
        in out.splitlines()
    code, out, _ = redline(cfg, "status", "--json")
    assert json.loads(out)["waiting_by_channel"] == {"archive": 2, "old-hook": 2}
