"""One delivery over the installation's SMTP server (the FIRSTLINE_SMTP_* settings), shared by the e-mails
to customers (ui.web.mail) and budget alerts (usage.alerts): plain to a local relay or upgraded with
STARTTLS (the server's certificate is verified), optional login."""

from __future__ import annotations

import smtplib
import ssl
from email.message import EmailMessage

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict


class SmtpSettings(BaseSettings):
    """The installation's one SMTP server, used by e-mails to customers (staff replies) and by budget alerts."""

    model_config = SettingsConfigDict(env_prefix="FIRSTLINE_", extra="ignore")

    smtp_host: str = Field("", description="SMTP server (empty: no e-mail is sent, neither replies nor alerts).")
    smtp_port: int = Field(25, ge=1, le=65535, description="SMTP port (587 with STARTTLS, 25 plain).")
    smtp_starttls: bool = Field(False, description="Upgrade the SMTP connection with STARTTLS.")
    smtp_user: str = Field("", description="SMTP login (empty: no login).")
    smtp_password: SecretStr | None = Field(None, description="SMTP password.")
    smtp_timeout_s: float = Field(15.0, gt=0, description="Seconds to wait for the SMTP server.")


def deliver(server: SmtpSettings, message: EmailMessage) -> None:
    """Send one message; raises OSError or smtplib.SMTPException."""
    with smtplib.SMTP(server.smtp_host, server.smtp_port, timeout=server.smtp_timeout_s) as smtp:
        if server.smtp_starttls:
            smtp.starttls(context=ssl.create_default_context())
        if server.smtp_user:
            smtp.login(server.smtp_user, server.smtp_password.get_secret_value() if server.smtp_password else "")
        smtp.send_message(message)
