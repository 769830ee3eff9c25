"""Where alerts go: the JSON-lines log (always), a Slack-compatible webhook, e-mail over SMTP.

A channel's ``deliver`` makes one attempt and raises :class:`DeliveryError` when it fails
(:class:`PermanentDeliveryError` when trying again cannot help, e.g. HTTP 404 or SMTP 550);
retries, back-off and logging of failures are the dispatcher's job.
"""

from __future__ import annotations

import json
import os
import smtplib
import socket
import ssl
import threading
import urllib.error
import urllib.parse
import urllib.request
from email.message import EmailMessage
from email.utils import format_datetime, make_msgid
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from etfuse.alerts.model import SEVERITY_RANK, Alert, format_list, iso_utc

try:  # POSIX: an advisory lock keeps lines from two processes whole
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None  # type: ignore[assignment]

USER_AGENT = "etfuse-alerts/1"


class DeliveryError(Exception):
    """One delivery attempt failed; worth retrying."""


class PermanentDeliveryError(DeliveryError):
    """Failed in a way a retry cannot fix (bad URL token, rejected recipient, bad credentials ...)."""


@runtime_checkable
class Channel(Protocol):
    """An outbound channel: ``name`` (used in logs and results), ``target`` (safe to log)."""

    name: str
    min_severity: str

    @property
    def target(self) -> str: ...

    def deliver(self, alert: Alert, *, group_id: str | None) -> None: ...


def accepts(channel: Channel, alert: Alert) -> bool:
    return SEVERITY_RANK[alert.severity] >= SEVERITY_RANK[channel.min_severity]


# --------------------------------------------------------------------------------------------
# JSON lines
# --------------------------------------------------------------------------------------------
class JsonlChannel:
    """Appends one JSON object per line to ``path``; flushed and fsynced per record."""

    name = "jsonl"

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self._lock = threading.Lock()

    @property
    def target(self) -> str:
        return str(self.path)

    def append(self, record: dict[str, Any]) -> None:
        try:
            line = json.dumps(record, ensure_ascii=False, separators=(",", ":"), allow_nan=False)
        except (TypeError, ValueError):
            line = json.dumps(record, ensure_ascii=False, separators=(",", ":"), default=str)
        data = (line + "\n").encode("utf-8")
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self._lock:
            fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o640)
            try:
                if fcntl is not None:
                    fcntl.flock(fd, fcntl.LOCK_EX)
                view = memoryview(data)
                while view:
                    written = os.write(fd, view)
                    view = view[written:]
                os.fsync(fd)
            finally:
                os.close(fd)                                   # closing releases the lock

    def read(self) -> list[dict[str, Any]]:
        """Every record so far (for tests and tools)."""
        if not self.path.exists():
            return []
        with self.path.open(encoding="utf-8") as fh:
            return [json.loads(line) for line in fh if line.strip()]


# --------------------------------------------------------------------------------------------
# Slack-compatible webhook
# --------------------------------------------------------------------------------------------
_EMOJI = {"critical": ":rotating_light:", "warning": ":warning:", "info": ":information_source:"}


def _mrkdwn(text: str) -> str:
    """Escape the three characters Slack's mrkdwn treats as control characters."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _cut(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[:limit - 1] + "…"


def _link(url: str, label: str) -> str:
    if url.startswith(("http://", "https://")):
        return f"<{url}|{label}>"
    return f"`{url}`"                                           # file:// links do not open from chat


def _failed_lines(alert: Alert, limit: int = 8) -> list[str]:
    lines = []
    failed = alert.details.get("failed")
    if isinstance(failed, list):
        for item in failed[:limit]:
            if isinstance(item, dict):
                check = item.get("check", "?")
                sev = item.get("severity", "")
                explain = item.get("explain") or item.get("expectation") or ""
                lines.append(f"{check} ({sev}): {explain}".rstrip(": "))
        if len(failed) > limit:
            lines.append(f"... and {len(failed) - limit} more")
    return lines


def slack_payload(alert: Alert, *, group_id: str | None = None) -> dict[str, Any]:
    """``{"text": ..., "blocks": [...]}``: Slack incoming-webhook JSON (Mattermost and others accept it)."""
    sev = alert.severity.upper()
    file_text = alert.file or "-"
    if alert.digest is not None:
        file_text = format_list([Path(f).name for f in alert.digest.files], limit=10)
    days = alert.days_text
    lines = [f"{_EMOJI[alert.severity]} *{sev}* {_mrkdwn(alert.source)}: {_mrkdwn(alert.summary)}",
             f"File: {_mrkdwn(file_text)}", f"Days: {days}"]
    if alert.report_url:
        lines.append(f"Report: <{alert.report_url}>" if alert.report_url.startswith(("http://", "https://"))
                     else f"Report: {alert.report_url}")
    text = _cut("\n".join(lines), 3000)

    fields = [f"*Severity*\n{sev}", f"*Source*\n{_mrkdwn(alert.source)}", f"*Kind*\n{_mrkdwn(alert.kind)}",
              f"*File*\n{_mrkdwn(file_text)}", f"*Days*\n{days}"]
    if alert.checks:
        fields.append(f"*Checks*\n{_mrkdwn(format_list(alert.checks, limit=8))}")
    blocks: list[dict[str, Any]] = [
        {"type": "header", "text": {"type": "plain_text", "text": _cut(f"{sev} · {alert.source} · {alert.kind}", 150),
                                    "emoji": True}},
        {"type": "section", "text": {"type": "mrkdwn", "text": _cut(_mrkdwn(alert.summary), 3000)}},
        {"type": "section", "fields": [{"type": "mrkdwn", "text": _cut(f, 2000)} for f in fields]},
    ]
    failed = _failed_lines(alert)
    if failed:
        blocks.append({"type": "section", "text": {"type": "mrkdwn", "text": _cut(
            "*Failed checks*\n" + "\n".join(f"• {_mrkdwn(x)}" for x in failed), 3000)}})
    if alert.digest is not None:
        d = alert.digest
        blocks.append({"type": "section", "text": {"type": "mrkdwn", "text": _cut(
            f"*Grouped*: {d.count} more like this since {iso_utc(d.since)}\n"
            f"*Files* ({d.files_total}): {_mrkdwn(format_list(d.files, limit=20))}", 3000)}})
    if alert.report_url:
        blocks.append({"type": "section", "text": {"type": "mrkdwn",
                                                   "text": _cut(f"*Report*: {_link(alert.report_url, 'open the validation report')}", 3000)}})
    context = f"etfuse · alert {alert.id} · fingerprint {alert.fingerprint}"
    if group_id:
        context += f" · group {group_id}"
    context += f" · {iso_utc(alert.created_at)}"
    blocks.append({"type": "context", "elements": [{"type": "mrkdwn", "text": context}]})
    return {"text": text, "blocks": blocks}


def redact_url(url: str) -> str:
    """``https://hooks.slack.com/…``: scheme and host only (webhook paths carry the secret token)."""
    parts = urllib.parse.urlsplit(url)
    host = parts.hostname or "?"
    port = f":{parts.port}" if parts.port else ""
    return f"{parts.scheme}://{host}{port}/…"


class WebhookChannel:
    """HTTP POST of :func:`slack_payload` as JSON; 2xx is success."""

    name = "webhook"

    def __init__(self, url: str, *, timeout_s: float = 3.0, min_severity: str = "info") -> None:
        self._url = url
        self.timeout_s = timeout_s
        self.min_severity = min_severity

    @property
    def target(self) -> str:
        return redact_url(self._url)

    def deliver(self, alert: Alert, *, group_id: str | None) -> None:
        body = json.dumps(slack_payload(alert, group_id=group_id), ensure_ascii=False).encode("utf-8")
        request = urllib.request.Request(self._url, data=body, method="POST", headers={
            "Content-Type": "application/json; charset=utf-8", "User-Agent": USER_AGENT})
        try:
            with urllib.request.urlopen(request, timeout=self.timeout_s) as response:
                response.read(65536)
                status = response.status
        except urllib.error.HTTPError as exc:
            reason = f"HTTP {exc.code} {exc.reason}"
            try:
                reason += f": {exc.read(300).decode('utf-8', 'replace').strip()}"
            except Exception:  # noqa: BLE001 - the body is only decoration
                pass
            if exc.code in (408, 425, 429) or exc.code >= 500:
                raise DeliveryError(reason) from None
            raise PermanentDeliveryError(reason) from None
        except urllib.error.URLError as exc:
            raise DeliveryError(f"cannot reach {self.target}: {exc.reason}") from None
        except (TimeoutError, socket.timeout) as exc:
            raise DeliveryError(f"no answer from {self.target} within {self.timeout_s:g} s") from exc
        except (OSError, ValueError) as exc:
            raise DeliveryError(f"{self.target}: {type(exc).__name__}: {exc}") from None
        if not 200 <= status < 300:
            raise DeliveryError(f"HTTP {status} from {self.target}")


# --------------------------------------------------------------------------------------------
# E-mail
# --------------------------------------------------------------------------------------------
def email_subject(alert: Alert, prefix: str = "[etfuse]") -> str:
    return _cut(f"{prefix} {alert.severity.upper()} {alert.source}: {alert.summary}", 200)


def email_body(alert: Alert, *, group_id: str | None = None) -> str:
    """Plain text with the same facts as the webhook message."""
    rows = [("Severity", alert.severity.upper()), ("Source", alert.source), ("Kind", alert.kind),
            ("File", alert.file or ("(see Files below)" if alert.digest else "-")), ("Days", alert.days_text),
            ("Checks", ", ".join(alert.checks) or "-"), ("Report", alert.report_url or "-")]
    out = ["etfuse data-quality alert", "", alert.summary, ""]
    out += [f"{name:<9}: {value}" for name, value in rows]
    failed = alert.details.get("failed")
    failed = [f for f in failed if isinstance(f, dict)] if isinstance(failed, list) else []
    if failed:
        out += ["", "Failed checks:"]
        for item in failed[:50]:
            head = f"  - {item.get('check', '?')} ({item.get('severity', '')})"
            if item.get("expectation"):
                head += f" {item['expectation']}" + (f" on {item['column']}" if item.get("column") else "")
            out.append(head)
            if item.get("explain"):
                out.append(f"      {item['explain']}")
            if item.get("observed") is not None:
                out.append("      observed: " + _cut(json.dumps(item["observed"], ensure_ascii=False, default=str), 600))
        if len(failed) > 50:
            out.append(f"  ... and {len(failed) - 50} more")
    if alert.digest is not None:
        d = alert.digest
        out += ["", f"Grouped: {d.count} more alerts like this since {iso_utc(d.since)} "
                    f"(suppressed between {iso_utc(d.first_at)} and {iso_utc(d.last_at)}; "
                    f"window ended {iso_utc(d.window_end)}).",
                f"Files ({d.files_total}):"] + [f"  {f}" for f in d.files[:200]]
        if d.files_total > min(len(d.files), 200):
            out.append(f"  ... and {d.files_total - min(len(d.files), 200)} more")
        if d.report_urls:
            out += ["Reports:"] + [f"  {u}" for u in d.report_urls[:50]]
    other = {k: v for k, v in alert.details.items() if not (k == "failed" and failed)}
    if other:
        out += ["", "Details:", _cut(json.dumps(other, indent=2, ensure_ascii=False, default=str), 8000)]
    out += ["", "--", f"alert {alert.id}, fingerprint {alert.fingerprint}"
                      + (f", group {group_id}" if group_id else "") + f", created {iso_utc(alert.created_at)}",
            "Identical problems (same severity, source, kind and checks) are grouped; see docs/alerts.md."]
    return "\n".join(out) + "\n"


def email_message(alert: Alert, *, sender: str, recipients: tuple[str, ...] | list[str],
                  group_id: str | None = None) -> EmailMessage:
    msg = EmailMessage()
    msg["Subject"] = email_subject(alert)
    msg["From"] = sender
    msg["To"] = ", ".join(recipients)
    msg["Date"] = format_datetime(alert.created_at)
    domain = sender.rpartition("@")[2] or "etfuse.invalid"
    msg["Message-ID"] = make_msgid(idstring=alert.id[:12], domain=domain)   # no getfqdn() lookups
    msg["X-Etfuse-Severity"] = alert.severity
    msg["X-Etfuse-Source"] = alert.source
    msg["X-Etfuse-Kind"] = alert.kind
    msg["X-Etfuse-Fingerprint"] = alert.fingerprint
    if group_id:
        msg["X-Etfuse-Group"] = group_id
    msg.set_content(email_body(alert, group_id=group_id))
    return msg


class SmtpChannel:
    """One SMTP session per message; STARTTLS / implicit TLS and login only when configured."""

    name = "email"

    def __init__(self, host: str, port: int, *, sender: str, recipients: tuple[str, ...],
                 user: str | None = None, password: Any = None, starttls: bool = False,
                 use_ssl: bool = False, ca_file: str | os.PathLike[str] | None = None,
                 local_hostname: str | None = None, timeout_s: float = 3.0,
                 min_severity: str = "warning") -> None:
        self.host, self.port = host, port
        self.sender, self.recipients = sender, tuple(recipients)
        self.user = user
        self._password = password            # str or SecretStr; never logged
        self.starttls, self.use_ssl = starttls, use_ssl
        self.ca_file = ca_file
        self.local_hostname = local_hostname
        self.timeout_s = timeout_s
        self.min_severity = min_severity

    @property
    def target(self) -> str:
        return f"smtp://{self.host}:{self.port}"

    def _password_text(self) -> str:
        pw = self._password
        return pw.get_secret_value() if hasattr(pw, "get_secret_value") else str(pw or "")

    def _tls_context(self) -> ssl.SSLContext:
        return ssl.create_default_context(cafile=str(self.ca_file) if self.ca_file else None)

    def deliver(self, alert: Alert, *, group_id: str | None) -> None:
        msg = email_message(alert, sender=self.sender, recipients=self.recipients, group_id=group_id)
        try:
            if self.use_ssl:
                client: smtplib.SMTP = smtplib.SMTP_SSL(self.host, self.port, local_hostname=self.local_hostname,
                                                        timeout=self.timeout_s, context=self._tls_context())
            else:
                client = smtplib.SMTP(self.host, self.port, local_hostname=self.local_hostname,
                                      timeout=self.timeout_s)
            with client:
                if self.starttls:
                    client.ehlo()
                    client.starttls(context=self._tls_context())
                    client.ehlo()
                if self.user:
                    client.login(self.user, self._password_text())
                refused = client.send_message(msg, from_addr=self.sender, to_addrs=list(self.recipients))
            if refused:
                raise PermanentDeliveryError(f"{self.target} refused recipients: "
                                             + ", ".join(f"{r} ({c[0]})" for r, c in refused.items()))
        except PermanentDeliveryError:
            raise
        except smtplib.SMTPRecipientsRefused as exc:
            raise PermanentDeliveryError(f"{self.target} refused every recipient: "
                                         + ", ".join(f"{r} ({c[0]})" for r, c in exc.recipients.items())) from None
        except smtplib.SMTPNotSupportedError as exc:
            raise PermanentDeliveryError(f"{self.target}: {exc}") from None
        except smtplib.SMTPResponseException as exc:
            text = exc.smtp_error.decode("utf-8", "replace") if isinstance(exc.smtp_error, bytes) else str(exc.smtp_error)
            reason = f"{self.target}: {exc.smtp_code} {text}"
            if 500 <= exc.smtp_code < 600:
                raise PermanentDeliveryError(reason) from None
            raise DeliveryError(reason) from None
        except ssl.SSLCertVerificationError as exc:
            raise PermanentDeliveryError(f"{self.target}: TLS certificate not trusted: {exc.verify_message}") from None
        except (TimeoutError, socket.timeout):
            raise DeliveryError(f"no answer from {self.target} within {self.timeout_s:g} s") from None
        except (smtplib.SMTPException, OSError) as exc:
            raise DeliveryError(f"{self.target}: {type(exc).__name__}: {exc}") from None


def channels_from_settings(alert_settings: Any) -> list[Channel]:
    """The outbound channels ``settings.alerts`` configures (the JSON-lines log is not one of them)."""
    cfg = alert_settings
    out: list[Channel] = []
    url = cfg.webhook_url.get_secret_value() if hasattr(cfg.webhook_url, "get_secret_value") else cfg.webhook_url
    if url:
        out.append(WebhookChannel(url, timeout_s=cfg.timeout_s, min_severity=cfg.min_severity_webhook))
    if cfg.smtp_host:
        out.append(SmtpChannel(cfg.smtp_host, cfg.smtp_port, sender=cfg.smtp_from, recipients=tuple(cfg.smtp_to),
                               user=cfg.smtp_user, password=cfg.smtp_password, starttls=cfg.smtp_starttls,
                               use_ssl=cfg.smtp_ssl, ca_file=cfg.smtp_ca_file,
                               local_hostname=cfg.smtp_local_hostname, timeout_s=cfg.timeout_s,
                               min_severity=cfg.min_severity_email))
    return out
