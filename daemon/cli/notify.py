"""`redline notify test` and `redline deliveries`."""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Any

import click

from daemon import query, render
from daemon.cli.app import App, echo_json
from daemon.errors import UsageError
from daemon.notify import ledger
from daemon.notify.channels import DeliveryFailed, Message, can_send, make_sender, send_within

TEST_TEXT = ("This is a TEST notification from redline (`redline notify test`), sent to check "
             "that channel {name} works. No statement changed.")


@click.group("notify")
def notify_group() -> None:
    """Notification channels.

    \b
    Example:
      redline notify test --channel newsroom
    """


@notify_group.command("test")
@click.option("--channel", "name", metavar="NAME", help="Only this channel (default: all).")
@click.option("--json", "as_json", is_flag=True, help="Print the results as JSON.")
@click.pass_obj
def notify_test(app: App, name: str | None, as_json: bool) -> None:
    """Send a clearly marked test message to each channel and report the result.

    The message is sent at once, also to digest channels, and is not recorded as a
    delivery. Exit status 1 when any channel failed.

    \b
    Example:
      redline notify test
      redline notify test --channel desk --json
    """
    config = app.config
    channels = [config.channel(name)] if name else list(config.channels)
    if not channels:
        raise UsageError("no channels are configured: add a [[channels]] table to "
                         f"{config.path}")
    results = []
    for ch in channels:
        now = dt.datetime.now(dt.UTC)
        body = {"type": "test", "test": True, "channel": ch.name, "sent_at": query.iso(now),
                "message": TEST_TEXT.format(name=ch.name)}
        result: dict[str, Any] = {"channel": ch.name, "type": ch.type, "ok": False,
                                  "error": None}
        if ch.type == "pg_notify":
            result.update(ok=None, error="skipped: pg_notify is sent with each event's "
                          "transaction; LISTEN redline_events to see it")
        elif not can_send(ch.type):
            result["error"] = f"type {ch.type} cannot send messages"
        else:
            sender = make_sender(ch)
            try:
                send_within(sender, Message("test", str(uuid.uuid4()), body),
                            ch.timeout_seconds)
                result["ok"] = True
            except DeliveryFailed as exc:
                result["error"] = str(exc)
            finally:
                sender.close()
        results.append(result)
    if as_json:
        echo_json(results)
    else:
        for r in results:
            outcome = ("ok, test message sent" if r["ok"] else
                       r["error"] if r["ok"] is None else f"FAILED: {r['error']}")
            click.echo(f"{r['channel']} ({r['type']}): {outcome}")
    if any(r["ok"] is False for r in results):
        click.get_current_context().exit(1)


@click.command("deliveries")
@click.option("--status", type=click.Choice(ledger.STATUSES), help="Only deliveries in this state.")
@click.option("--channel", metavar="NAME", help="Only this channel.")
@click.option("--retry", is_flag=True,
              help="Re-queue dead deliveries (with --status failed: retry failed ones now).")
@click.option("--limit", type=click.IntRange(1), default=50, show_default=True,
              help="Show at most this many deliveries, newest first.")
@click.option("--json", "as_json", is_flag=True, help="Print the deliveries as JSON.")
@click.pass_obj
def deliveries_cmd(app: App, status: str | None, channel: str | None, retry: bool, limit: int,
                   as_json: bool) -> None:
    """Delivery state of notifications; --retry re-queues dead ones.

    \b
    Example:
      redline deliveries --status dead
      redline deliveries --retry --channel newsroom
    """
    if retry:
        if status not in (None, "dead", "failed"):
            raise UsageError("--retry re-queues dead deliveries (or failed ones with "
                             f"--status failed), not {status} ones")
        engine = app.engine()
        with engine.begin() as conn:
            count = ledger.requeue(conn, dt.datetime.now(dt.UTC), status or "dead", channel)
        if as_json:
            echo_json({"requeued": count, "status": status or "dead", "channel": channel})
        else:
            click.echo(f"re-queued {count} {status or 'dead'} "
                       f"deliver{'y' if count == 1 else 'ies'}"
                       + (f" of channel {channel}" if channel else "")
                       + ("; a running redline delivers them within dispatch_seconds"
                          if count else ""))
        return
    engine = app.engine(readonly=True)
    with engine.connect() as conn:
        rows = ledger.list_deliveries(conn, status, channel, limit)
        counts = ledger.status_counts(conn)
    if as_json:  # the rows of /api/deliveries, times in whole seconds like every --json
        echo_json([{k: query.iso(v) for k, v in r.items()} for r in rows])
        return
    for ch, by_status in sorted(counts.items()):
        if channel and ch != channel:
            continue
        click.echo(f"{ch}: " + ", ".join(f"{n} {s}" for s, n in sorted(by_status.items())))
    if not rows:
        click.echo("no deliveries" + (f" with status {status}" if status else ""))
        return
    click.echo("")
    for r in render.shown(rows):  # a URL or a receiver's error may hold ESC
        when = (f"delivered {query.iso(r['delivered_at'])}" if r["delivered_at"] else
                f"next attempt {query.iso(r['next_attempt_at'])}" if r["next_attempt_at"]
                else "")
        line = (f"event {r['event_id']} {r['kind']} → {r['channel']}: {r['status']}, "
                f"{r['attempts']} attempt{'' if r['attempts'] == 1 else 's'}"
                + (f", {when}" if when else ""))
        click.echo(line)
        click.echo(f"    {r['source_url']}")
        if r["last_error"] and r["status"] != "delivered":
            click.echo(f"    last error: {r['last_error']}")
