"""E-mail: a staff reply reaches the customer who left an address, with a link back to the conversation.

`Mailer` sends one message over SMTP (plain to a local relay or STARTTLS, optional login; settings in
ui.settings.MailSettings, the same SMTP_* variables as budget alerts). `ReplyMailer` is the
outbox of staff replies: the ticket events are the queue (TicketStore.pending_mails), so a reply written
while the mail server is down, or just before the process stopped, is sent later; each is recorded as
`emailed`, or `email_failed` with the cause and retried (at most 5 times). Delivery is at least once: a
crash between sending and recording sends that reply again after the restart.

The link carries a fresh conversation token (ConversationStore.issue_token): whoever opens it continues
the conversation in the chat, on any device, until it has gone unused for FIRSTLINE_CONVERSATION_TOKEN_DAYS.
"""

from __future__ import annotations

import logging
import smtplib
import threading
import time
from datetime import timedelta
from email.message import EmailMessage
from email.utils import formatdate, make_msgid

from bot import prompts
from bot.conversation_store import ConversationStore
from bot.tickets import TicketStore
from ui.settings import MailSettings
from usage.smtp import deliver

log = logging.getLogger(__name__)
MAX_ATTEMPTS = 5
RETRY_S = (30.0, 120.0, 600.0, 1800.0)  # waits after the 1st, 2nd, ... failure of one reply


class MailError(Exception):
    """Sending an e-mail failed (logged and recorded for the operator; the customer is not involved)."""


class Mailer:
    """Sends e-mail through the configured SMTP server."""

    def __init__(self, settings: MailSettings) -> None:
        self.settings = settings

    @property
    def enabled(self) -> bool:
        """Customers get e-mail once a server and a sender are set (SMTP alone may serve budget alerts)."""
        return bool(self.settings.smtp_host and self.settings.mail_from)

    def send(self, to: str, subject: str, body: str) -> None:
        """Send one plain-text message; raises MailError."""
        s = self.settings
        if not s.smtp_host or not s.mail_from:
            raise MailError("e-mail is not configured (FIRSTLINE_SMTP_HOST, FIRSTLINE_MAIL_FROM)")
        msg = EmailMessage()
        msg["From"], msg["To"], msg["Subject"] = s.mail_from, to, subject
        msg["Date"], msg["Message-ID"] = formatdate(localtime=False), make_msgid(domain="firstline")
        msg["Auto-Submitted"] = "auto-generated"  # no out-of-office replies back to us
        msg.set_content(body)
        try:
            deliver(s, msg)
        except (OSError, smtplib.SMTPException) as exc:
            raise MailError(f"cannot send e-mail via {s.smtp_host}:{s.smtp_port}: {exc}") from exc


class ReplyMailer:
    """Sends staff replies to the customers who asked for e-mail, from a background thread."""

    def __init__(
        self,
        tickets: TicketStore,
        conversations: ConversationStore,
        mailer: Mailer,
        *,
        company: str,
        token_days: float,
        interval_s: float = 5.0,
    ) -> None:
        self.tickets, self.conversations, self.mailer = tickets, conversations, mailer
        self.company, self.token_days, self.interval_s = company, token_days, interval_s
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._retry_at: dict[int, tuple[int, float]] = {}  # event id -> (failures, monotonic time of next try)

    def link(self, conversation_id: str) -> str:
        """The chat address that resumes the conversation (empty without a public URL or resuming)."""
        base = (self.mailer.settings.public_url or "").rstrip("/")
        if not base or self.token_days <= 0:
            return ""
        token = self.conversations.issue_token(conversation_id, timedelta(days=self.token_days))
        return f"{base}/chat/?c={token}"

    def run_once(self) -> int:
        """Send what is pending; returns how many were sent."""
        sent = 0
        for row in self.tickets.pending_mails(MAX_ATTEMPTS):
            failures, due = self._retry_at.get(row["event_id"], (0, 0.0))
            if time.monotonic() < due:
                continue
            lang = row["lang"] if row["lang"] in prompts.REPLY_MAIL_BODY else "en"
            try:
                url = self.link(row["conversation_id"])
                body = prompts.REPLY_MAIL_BODY[lang].format(
                    name=row["staff"], company=self.company, ticket=row["ticket_id"], reply=row["body"] or "",
                    link=prompts.REPLY_MAIL_LINK[lang].format(url=url) if url else "",
                )  # fmt: skip
                subject = prompts.REPLY_MAIL_SUBJECT[lang].format(company=self.company, ticket=row["ticket_id"])
                self.mailer.send(row["email"], subject, body)
            except MailError as exc:
                log.warning("reply e-mail for ticket %s not sent: %s", row["ticket_id"], exc)
                self.tickets.mark_mailed(row["ticket_id"], row["event_id"], str(exc))
                wait = RETRY_S[min(failures, len(RETRY_S) - 1)]
                self._retry_at[row["event_id"]] = (failures + 1, time.monotonic() + wait)
                continue
            self._retry_at.pop(row["event_id"], None)
            self.tickets.mark_mailed(row["ticket_id"], row["event_id"])
            sent += 1
        return sent

    def start(self) -> None:
        self._thread = threading.Thread(target=self._loop, name="reply-mailer", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=30)

    def _loop(self) -> None:
        while not self._stop.wait(self.interval_s):
            try:
                self.run_once()
            except Exception:  # the database may be busy; the next round tries again
                log.exception("reply e-mails: round failed")
