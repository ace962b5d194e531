"""Tests for daemon.notify.email against a real SMTP server (aiosmtpd on 127.0.0.1)."""

from __future__ import annotations

import ssl
import subprocess
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from notify_support import (
    FakeClock,
    SmtpReceiver,
    closed_port,
    config_for,
    copy_statements,
    dispatch_once,
    edit_one_word,
    ingestor,
    rows,
)
from structlog.testing import capture_logs

from daemon.notify.channels import DeliveryFailed, Message
from daemon.notify.email import EmailSender


def email_channel(port: int, **keys: str) -> str:
    extra = "".join(f"{k} = {v}\n" for k, v in keys.items())
    return (f'[[channels]]\nname = "desk"\ntype = "email"\nhost = "127.0.0.1"\n'
            f'port = {port}\nfrom = "redline@example.org"\nto = ["desk@example.org", '
            f'"night@example.org"]\n{extra}\n')


def test_an_event_arrives_as_text_and_html_with_the_word_diff(
        engine: sa.Engine, db_url: str, sample: Path, tmp_path: Path) -> None:
    """A revised statement becomes one email to every recipient: a plain-text part with the
    unified diff and an HTML part marking the old word <del> and the new one <ins>."""
    clock = FakeClock()
    with SmtpReceiver() as smtp:
        config = config_for(tmp_path, db_url, email_channel(
            smtp.port, starttls="false", kinds='["revised"]'))
        (path,) = copy_statements(sample, tmp_path / "statements", 1)
        ing = ingestor(engine, config, clock)
        ing.process_paths([str(path)])
        old_word = edit_one_word(path, "Zanzibar")
        ing.process_paths([str(path)])
        assert dispatch_once(engine, config, clock) == 1
        (msg,) = smtp.wait_for(1)
        (envelope,) = smtp.envelopes
    assert sorted(envelope.rcpt_tos) == ["desk@example.org", "night@example.org"]
    title = rows(engine, "SELECT title FROM current_statements")[0][0]
    assert msg["Subject"] == f"[redline] revised: {' '.join(title.split())}"[:130]
    assert msg["X-Redline-Event"] == "revised"
    assert msg["Message-ID"] == f"<{msg['X-Redline-Delivery']}@redline>"
    assert msg.get_content_type() == "multipart/alternative"
    plain = msg.get_body(("plain",)).get_content()
    html = msg.get_body(("html",)).get_content()
    assert f"-{old_word}" not in plain  # paragraphs are lines: the whole paragraph changes
    assert "Zanzibar" in plain and old_word in plain and "--- r1" in plain
    assert f">{old_word}" in html and "<del" in html and "<ins" in html
    assert ">Zanzibar" in html
    assert rows(engine, "SELECT status, attempts FROM delivery_status")[0] == ("delivered", 1)


def _authenticator(server: Any, session: Any, envelope: Any, mechanism: str,
                   auth_data: Any) -> Any:
    from aiosmtpd.smtp import AuthResult, LoginPassword

    ok = isinstance(auth_data, LoginPassword) and (auth_data.login, auth_data.password) == (
        b"editor", b"pa55")
    return AuthResult(success=ok, handled=False)


def _channel_config(tmp_path: Path, port: int, environ: dict[str, str] | None = None,
                    **keys: str) -> Any:
    config = config_for(tmp_path, f"sqlite:///{tmp_path / 'x.db'}",
                        email_channel(port, **keys), environ=environ)
    return config.channel("desk")


def _test_message() -> Message:
    return Message("test", "0000-test", {"channel": "desk", "message": "a test"})


def test_login_uses_the_credentials_from_the_environment(tmp_path: Path) -> None:
    """With username_env/password_env the sender logs in; a wrong password is a failure
    that names the SMTP reply."""
    with SmtpReceiver(authenticator=_authenticator, auth_require_tls=False,
                      auth_exclude_mechanism=["LOGIN"]) as smtp:
        good = _channel_config(tmp_path, smtp.port, {"U": "editor", "P": "pa55"},
                               starttls="false", username_env='"U"', password_env='"P"')
        EmailSender(good).send(_test_message())
        (msg,) = smtp.wait_for(1)
        assert msg["Subject"] == "[redline] TEST notification for channel desk"
        bad = _channel_config(tmp_path, smtp.port, {"U": "editor", "P": "wrong"},
                              starttls="false", username_env='"U"', password_env='"P"')
        with pytest.raises(DeliveryFailed, match="535"):
            EmailSender(bad).send(_test_message())


@pytest.fixture(scope="module")
def self_signed(tmp_path_factory: pytest.TempPathFactory) -> ssl.SSLContext:
    """A server TLS context with a freshly made self-signed certificate."""
    d = tmp_path_factory.mktemp("tls")
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
                    "-subj", "/CN=127.0.0.1", "-keyout", str(d / "key.pem"),
                    "-out", str(d / "cert.pem")], check=True, capture_output=True)
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(d / "cert.pem", d / "key.pem")
    return ctx


def test_starttls_is_used_and_the_certificate_verified(
        tmp_path: Path, self_signed: ssl.SSLContext) -> None:
    """starttls = true upgrades the session and verifies the server's certificate: an
    untrusted (self-signed) one fails the delivery instead of sending in the clear."""
    with SmtpReceiver(tls_context=self_signed, require_starttls=True) as smtp:
        channel = _channel_config(tmp_path, smtp.port, starttls="true")
        with pytest.raises(DeliveryFailed, match="TLS failed: certificate verify failed"):
            EmailSender(channel).send(_test_message())
        plain = _channel_config(tmp_path, smtp.port, starttls="false")
        with pytest.raises(DeliveryFailed, match="530"):  # the server insists on STARTTLS
            EmailSender(plain).send(_test_message())
        assert smtp.messages == []


def test_implicit_tls_verifies_the_certificate(tmp_path: Path,
                                               self_signed: ssl.SSLContext) -> None:
    """tls = true speaks TLS from the first byte (SMTPS) and verifies the certificate."""
    with SmtpReceiver(ssl_context=self_signed) as smtp:
        channel = _channel_config(tmp_path, smtp.port, tls="true")
        assert channel.options["starttls"] is False
        with pytest.raises(DeliveryFailed, match="TLS failed: certificate verify failed"):
            EmailSender(channel).send(_test_message())


def test_unreachable_server_is_a_failure(tmp_path: Path) -> None:
    """Nothing listening is a failure naming the host and port."""
    port = closed_port()
    channel = _channel_config(tmp_path, port, starttls="false")
    with pytest.raises(DeliveryFailed, match=f"127.0.0.1:{port}: cannot connect"):
        EmailSender(channel).send(_test_message())


def test_a_missing_smtp_extension_is_named_with_the_setting_to_change(tmp_path: Path) -> None:
    """A server without STARTTLS, or without AUTH while a login is configured: the failure
    says which setting to change, not the same hint for both."""
    with SmtpReceiver() as smtp:  # plain: neither STARTTLS nor AUTH offered
        tls = _channel_config(tmp_path, smtp.port, starttls="true")
        with pytest.raises(DeliveryFailed, match=r"\(set starttls = false for a plain relay"):
            EmailSender(tls).send(_test_message())
        login = _channel_config(tmp_path, smtp.port, {"U": "editor", "P": "pa55"},
                                starttls="false", username_env='"U"', password_env='"P"')
        with pytest.raises(DeliveryFailed) as failed:
            EmailSender(login).send(_test_message())
        assert "AUTH" in str(failed.value) and "offers no login" in str(failed.value)
        assert "starttls" not in str(failed.value)
        assert smtp.messages == []


@pytest.mark.parametrize(("reply", "delivered"), [("550 5.1.1 no such user", True),
                                                   ("450 4.2.1 mailbox busy", False)])
def test_a_recipient_refused_for_good_does_not_repeat_the_message_to_the_others(
        tmp_path: Path, reply: str, delivered: bool) -> None:
    """One mistyped address among the recipients (refused 5xx) must not make the message
    a failure: a retry would send it again to everyone who has it, up to max_attempts
    times, and be refused again. The refusal is logged with the server's reply. A
    temporary refusal (4xx) is a failure, retried: the refused one may get it then."""
    with SmtpReceiver(refuse={"night@example.org": reply}) as smtp:
        channel = _channel_config(tmp_path, smtp.port, starttls="false")
        with capture_logs() as logs:
            if delivered:
                EmailSender(channel).send(_test_message())
            else:
                with pytest.raises(DeliveryFailed, match=f"night@example.org \\({reply}\\)"):
                    EmailSender(channel).send(_test_message())
        smtp.wait_for(1)
        assert [e.rcpt_tos for e in smtp.envelopes] == [["desk@example.org"]]
    refusals = [e for e in logs if e["event"] == "email_recipients_refused"]
    if delivered:
        assert [e["refused"] for e in refusals] == [f"night@example.org ({reply})"]
        assert refusals[0]["log_level"] == "warning"
    else:
        assert refusals == []
