"""Email channel: one message per event (or per digest) with a text and an HTML part, sent
with the standard library over STARTTLS, implicit TLS or a plain local relay."""

from __future__ import annotations

import smtplib
import ssl
from email.message import EmailMessage
from email.utils import formatdate

import structlog

from daemon.config import ChannelConfig
from daemon.notify import render
from daemon.notify.channels import DeliveryFailed, Message

log = structlog.get_logger(__name__)


def build_email(channel: ChannelConfig, message: Message) -> EmailMessage:
    """The multipart/alternative message: plain text first, HTML second."""
    msg = EmailMessage()
    msg["Subject"] = render.subject(message)
    msg["From"] = str(channel.options["from"])
    msg["To"] = ", ".join(channel.options["to"])
    msg["Date"] = formatdate(localtime=False, usegmt=True)
    # the same id on every retry lets a mail system drop a duplicate
    msg["Message-ID"] = f"<{message.delivery_id}@redline>"
    msg["X-Redline-Event"] = message.kind
    msg["X-Redline-Delivery"] = message.delivery_id
    msg.set_content(render.text(message), subtype="plain", charset="utf-8")
    msg.add_alternative(render.html(message), subtype="html", charset="utf-8")
    return msg


class EmailSender:
    """Opens one SMTP session per message: simple, and nothing stale between retries."""

    def __init__(self, channel: ChannelConfig) -> None:
        self.channel = channel
        opts = channel.options
        self.host = str(opts["host"])
        self.port = int(opts["port"])
        self.tls = bool(opts.get("tls"))
        self.starttls = bool(opts.get("starttls")) and not self.tls
        self.username = channel.secrets.get("username")
        self.password = channel.secrets.get("password")
        self.timeout = channel.timeout_seconds

    def send(self, message: Message) -> None:
        msg = build_email(self.channel, message)
        # what to change when the server lacks an extension, by the step that needed it
        hint = ""
        try:
            with self._connect() as smtp:
                if self.starttls:
                    hint = " (set starttls = false for a plain relay)"
                    smtp.starttls(context=ssl.create_default_context())
                if self.username:
                    hint = (" (the server offers no login: leave out username_env and "
                            "password_env, or use its TLS port)")
                    smtp.login(self.username, self.password or "")
                hint = ""
                refused = smtp.send_message(msg)
        except TimeoutError:
            raise DeliveryFailed(f"SMTP {self.host}:{self.port}: timed out",
                                 timed_out=True) from None
        except smtplib.SMTPNotSupportedError as exc:
            raise DeliveryFailed(f"SMTP {self.host}:{self.port}: {_smtp_reason(exc)}{hint}"
                                 ) from None
        except smtplib.SMTPException as exc:
            raise DeliveryFailed(f"SMTP {self.host}:{self.port}: {_smtp_reason(exc)}") from None
        except ssl.SSLError as exc:
            why = (f"certificate verify failed: {exc.verify_message}"
                   if isinstance(exc, ssl.SSLCertVerificationError) else exc.reason or exc)
            raise DeliveryFailed(f"SMTP {self.host}:{self.port}: TLS failed: {why}") from None
        except OSError as exc:
            raise DeliveryFailed(f"SMTP {self.host}:{self.port}: cannot connect: "
                                 f"{exc.strerror or exc}") from None
        if refused:
            said = ", ".join(f"{addr} ({_reply(code, text)})"
                             for addr, (code, text) in sorted(refused.items()))
            if all(code >= 500 for code, _ in refused.values()):
                # the others have the message: a retry would send it to them again, and a
                # permanent refusal (a mistyped address) would refuse it again
                log.warning("email_recipients_refused", channel=self.channel.name,
                            refused=said, detail="delivered to the other recipients; "
                            "a permanent refusal is not retried")
                return
            raise DeliveryFailed(f"SMTP refused recipients: {said}")

    def _connect(self) -> smtplib.SMTP:
        if self.tls:
            return smtplib.SMTP_SSL(self.host, self.port, timeout=self.timeout,
                                    context=ssl.create_default_context())
        return smtplib.SMTP(self.host, self.port, timeout=self.timeout)

    def close(self) -> None:
        pass


def _reply(code: int, text: bytes | str | None) -> str:
    """An SMTP reply as a person reads it: `550 5.1.1 no such user`."""
    if isinstance(text, bytes):
        text = text.decode("utf-8", "replace")
    return f"{code} {text or ''}".strip()


def _smtp_reason(exc: smtplib.SMTPException) -> str:
    code = getattr(exc, "smtp_code", None)
    if code:
        return _reply(code, getattr(exc, "smtp_error", None))
    if isinstance(exc, smtplib.SMTPRecipientsRefused):
        return "all recipients refused: " + ", ".join(sorted(exc.recipients))
    return str(exc) or type(exc).__name__
