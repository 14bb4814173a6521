"""Outgoing mail over SMTP (settings ``smtp``)."""

from __future__ import annotations

import hashlib
from email.message import EmailMessage
from email.utils import formatdate, parseaddr

import aiosmtplib

from taskhub_api.settings import SmtpSettings


def message_id(job_key: str, from_address: str) -> str:
    """A Message-ID derived from the job key: a resent mail carries the same id, so
    receiving systems can drop the duplicate."""
    domain = parseaddr(from_address)[1].rpartition("@")[2] or "taskhub.local"
    return f"<{hashlib.sha256(job_key.encode()).hexdigest()[:32]}@{domain}>"


def compose(
    settings: SmtpSettings, *, to: str, subject: str, body: str, job_key: str
) -> EmailMessage:
    message = EmailMessage()
    message["From"] = settings.from_address
    message["To"] = to
    message["Subject"] = subject
    message["Date"] = formatdate(usegmt=True)
    message["Message-ID"] = message_id(job_key, settings.from_address)
    message["X-TaskHub-Job"] = job_key
    message.set_content(body)
    return message


async def send(settings: SmtpSettings, message: EmailMessage) -> None:
    await aiosmtplib.send(
        message,
        hostname=settings.host,
        port=settings.port,
        username=settings.username,
        password=settings.password.get_secret_value() if settings.password else None,
        use_tls=settings.ssl,
        start_tls=settings.starttls if not settings.ssl else False,
        timeout=settings.timeout_seconds,
    )
