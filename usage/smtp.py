"""One delivery over the installation's SMTP server (the FIRSTLINE_SMTP_* settings), shared by the e-mails
to customers (ui.web.mail) and budget alerts (usage.alerts): plain to a local relay or upgraded with
STARTTLS (the server's certificate is verified), optional login."""

from __future__ import annotations

import smtplib
import ssl
from email.message import EmailMessage
from typing import Protocol

from pydantic import SecretStr


class SmtpServer(Protocol):
    """The SMTP settings both settings classes carry."""

    @property
    def smtp_host(self) -> str: ...
    @property
    def smtp_port(self) -> int: ...
    @property
    def smtp_starttls(self) -> bool: ...
    @property
    def smtp_user(self) -> str: ...
    @property
    def smtp_password(self) -> SecretStr | None: ...


def deliver(server: SmtpServer, message: EmailMessage, timeout_s: float) -> None:
    """Send one message; raises OSError or smtplib.SMTPException."""
    with smtplib.SMTP(server.smtp_host, server.smtp_port, timeout=timeout_s) as smtp:
        if server.smtp_starttls:
            smtp.starttls(context=ssl.create_default_context())
        if server.smtp_user:
            smtp.login(server.smtp_user, server.smtp_password.get_secret_value() if server.smtp_password else "")
        smtp.send_message(message)
