"""Alerts to people through Apprise: e-mail, JSON webhooks, Slack, WeCom, DingTalk, Feishu, ...

``alerts.apprise_urls`` lists Apprise URLs (``mailto://``, ``json://``, ``slack://``,
``wecombot://``, ``dingtalk://``, ``feishu://`` and the other services Apprise knows).

Why not every URL goes to ``Apprise.notify``: the chat services answer HTTP 200 with an error in the
body (WeCom and DingTalk ``{"errcode": 93000, ...}``, Feishu ``{"code": 19001, ...}``, a Slack
incoming webhook a body other than ``ok``), and Apprise 1.13's WeCom, DingTalk and Feishu plugins
look only at the status code (``if r.status_code != requests.codes.ok``), so a revoked bot key would
count as delivered.  Those four services are therefore sent by :class:`ChatChannel`, which posts the
service's own JSON to the webhook and reads the body; Apprise parses their URLs (its plugin gives
the token, the DingTalk secret and the endpoint), so the URL forms are Apprise's.  A full ``https``
webhook URL copied from the service (``https://qyapi.weixin.qq.com/cgi-bin/webhook/send?key=...``)
is accepted too, prefixed by the service: ``wecom+https://...``, ``dingtalk+https://...``,
``feishu+https://...``, ``slack+https://...`` (this form also reaches a private gateway or, in tests,
a loopback receiver).  Everything else goes through :class:`AppriseChannel` (Apprise's
``notify()`` result).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import socket
import time
import urllib.error
import urllib.parse
import urllib.request
from typing import Any

from etfuse.alerts.channels import USER_AGENT, DeliveryError, PermanentDeliveryError, email_body, email_subject
from etfuse.alerts.model import Alert

#: the services whose delivery is read from the response body, and their Apprise schemes
CHAT_SCHEMES = {"wecombot": "wecom", "dingtalk": "dingtalk", "feishu": "feishu", "slack": "slack"}
#: service -> the webhook endpoint the Apprise plugin posts to (Apprise 1.13 plugins' notify_url)
_ENDPOINTS = {"wecom": "https://qyapi.weixin.qq.com/cgi-bin/webhook/send?key={token}",
              "dingtalk": "https://oapi.dingtalk.com/robot/send?access_token={token}",
              "feishu": "https://open.feishu.cn/open-apis/bot/v2/hook/{token}"}


def chat_text(alert: Alert, *, group_id: str | None = None) -> str:
    """The plain text every chat service gets: the same facts as the e-mail, shortened."""
    lines = [f"[etfuse] {alert.severity.upper()} {alert.source}/{alert.kind}: {alert.summary}"]
    if alert.file:
        lines.append(f"File: {alert.file}")
    if alert.days:
        lines.append(f"Days: {alert.days_text}")
    if alert.checks:
        lines.append("Checks: " + ", ".join(alert.checks[:8]))
    if alert.report_url:
        lines.append(f"Report: {alert.report_url}")
    if alert.digest is not None:
        lines.append(f"Grouped: {alert.digest.count} more like this")
    lines.append(f"alert {alert.id[:12]}" + (f", group {group_id}" if group_id else ""))
    text = "\n".join(lines)
    return text if len(text) <= 3800 else text[:3799] + "…"


def payload(service: str, text: str) -> dict[str, Any]:
    """The JSON body of a text message for ``service``."""
    if service == "feishu":
        return {"msg_type": "text", "content": {"text": text}}
    if service == "slack":
        return {"text": text}
    return {"msgtype": "text", "text": {"content": text}}       # wecom and dingtalk


def body_error(service: str, status: int, body: bytes) -> str | None:
    """What went wrong according to the body of a 2xx answer, or None when the message was taken."""
    text = body.decode("utf-8", "replace").strip()
    if service == "slack":
        return None if text == "ok" else f"Slack answered {text[:200]!r} instead of 'ok'"
    try:
        answer = json.loads(text)
    except ValueError:
        return f"{service} answered HTTP {status} with a body that is not JSON: {text[:200]!r}"
    if not isinstance(answer, dict):
        return f"{service} answered {text[:200]!r}"
    key = "code" if service == "feishu" and "code" in answer else "StatusCode" if service == "feishu" else "errcode"
    code = answer.get(key)
    if code in (0, "0"):
        return None
    message = answer.get("msg") or answer.get("errmsg") or answer.get("StatusMessage") or ""
    return f"{service} refused the message: {key} {code} {message}".strip()


class ChatChannel:
    """One chat webhook (WeCom, DingTalk, Feishu, Slack); delivery is judged on the response body."""

    def __init__(self, service: str, url: str, *, secret: str | None = None, timeout_s: float = 3.0,
                 min_severity: str = "warning") -> None:
        if service not in _ENDPOINTS and service != "slack":
            raise ValueError(f"unknown chat service {service!r}; expected one of {sorted(CHAT_SCHEMES.values())}")
        self.name = service
        self._url, self._secret = url, secret
        self.timeout_s, self.min_severity = timeout_s, min_severity

    @property
    def target(self) -> str:
        parts = urllib.parse.urlsplit(self._url)
        return f"{self.name}:{parts.scheme}://{parts.hostname}{f':{parts.port}' if parts.port else ''}/…"

    def _signed_url(self) -> str:
        """DingTalk's signed robots: ``timestamp`` [ms] and ``sign`` = base64(HMAC-SHA256(secret,
        "timestamp\\nsecret")) appended to the URL."""
        if self.name != "dingtalk" or not self._secret:
            return self._url
        stamp = str(int(time.time() * 1000))
        digest = hmac.new(self._secret.encode(), f"{stamp}\n{self._secret}".encode(), hashlib.sha256).digest()
        sign = urllib.parse.quote_plus(base64.b64encode(digest))
        return f"{self._url}{'&' if '?' in self._url else '?'}timestamp={stamp}&sign={sign}"

    def deliver(self, alert: Alert, *, group_id: str | None) -> None:
        data = json.dumps(payload(self.name, chat_text(alert, group_id=group_id)), ensure_ascii=False).encode()
        request = urllib.request.Request(self._signed_url(), data=data, method="POST", headers={
            "Content-Type": "application/json; charset=utf-8", "User-Agent": USER_AGENT})
        try:
            with urllib.request.urlopen(request, timeout=self.timeout_s) as response:
                status, body = response.status, response.read(65536)
        except urllib.error.HTTPError as exc:
            reason = f"{self.target}: HTTP {exc.code} {exc.reason}"
            if exc.code in (408, 425, 429) or exc.code >= 500:
                raise DeliveryError(reason) from None
            raise PermanentDeliveryError(reason) from None
        except urllib.error.URLError as exc:
            raise DeliveryError(f"cannot reach {self.target}: {exc.reason}") from None
        except (TimeoutError, socket.timeout):
            raise DeliveryError(f"no answer from {self.target} within {self.timeout_s:g} s") from None
        except (OSError, ValueError) as exc:
            raise DeliveryError(f"{self.target}: {type(exc).__name__}: {exc}") from None
        if not 200 <= status < 300:
            raise DeliveryError(f"{self.target}: HTTP {status}")
        problem = body_error(self.name, status, body)
        if problem:
            raise DeliveryError(f"{self.target}: {problem}")


class AppriseChannel:
    """Any other Apprise URL (``mailto://``, ``json://``, ...): delivered when ``notify()`` says so."""

    def __init__(self, url: str, *, timeout_s: float = 3.0, min_severity: str = "warning") -> None:
        import apprise

        self._apprise = apprise.Apprise()
        plugin = apprise.Apprise.instantiate(url)
        if plugin is None:
            raise ValueError(f"Apprise does not understand the URL {redact(url)}")
        for attr in ("socket_connect_timeout", "socket_read_timeout"):
            if hasattr(plugin, attr):
                setattr(plugin, attr, timeout_s)
        if hasattr(plugin, "timeout"):
            plugin.timeout = int(max(timeout_s, 1))
        self._apprise.add(plugin)
        self.name = f"apprise:{url.split('://', 1)[0]}"
        self._url = url
        self.timeout_s, self.min_severity = timeout_s, min_severity

    @property
    def target(self) -> str:
        return redact(self._url)

    def deliver(self, alert: Alert, *, group_id: str | None) -> None:
        import apprise

        kind = {"critical": apprise.NotifyType.FAILURE, "warning": apprise.NotifyType.WARNING}.get(
            alert.severity, apprise.NotifyType.INFO)
        try:
            ok = self._apprise.notify(body=email_body(alert, group_id=group_id), title=email_subject(alert),
                                      notify_type=kind)
        except Exception as exc:  # noqa: BLE001 - a plugin bug is a failed delivery, never an ingest failure
            raise DeliveryError(f"{self.target}: {type(exc).__name__}: {exc}") from None
        if not ok:
            raise DeliveryError(f"{self.target}: Apprise reported the notification as not delivered")


def redact(url: str) -> str:
    """``scheme://host/…``: no tokens, passwords or paths in logs."""
    scheme, _, rest = url.partition("://")
    host = rest.split("/", 1)[0].split("?", 1)[0].rpartition("@")[2]
    return f"{scheme}://{host}/…" if scheme in ("mailto", "mailtos", "json", "jsons", "http", "https") \
        else f"{scheme}://…"


def channel_from_url(url: str, *, timeout_s: float, min_severity: str):
    """The channel of one ``alerts.apprise_urls`` entry (see the module docstring)."""
    scheme, _, rest = url.partition("://")
    scheme = scheme.lower()
    if "+" in scheme:                                   # wecom+https://... : the service's own webhook URL
        service, _, transport = scheme.partition("+")
        if service not in CHAT_SCHEMES.values() or transport not in ("http", "https"):
            raise ValueError(f"{redact(url)}: expected wecom+, dingtalk+, feishu+ or slack+ before an http(s) URL")
        query = urllib.parse.parse_qs(urllib.parse.urlsplit(url).query)
        secret = (query.get("secret") or [None])[0]
        clean = f"{transport}://{rest}"
        if secret:                                      # etfuse's own parameter, not the service's
            parts = urllib.parse.urlsplit(clean)
            kept = [(k, v) for k, v in urllib.parse.parse_qsl(parts.query) if k != "secret"]
            clean = urllib.parse.urlunsplit(parts._replace(query=urllib.parse.urlencode(kept)))
        return ChatChannel(service, clean, secret=secret, timeout_s=timeout_s, min_severity=min_severity)
    if scheme in CHAT_SCHEMES:
        import apprise

        plugin = apprise.Apprise.instantiate(url)
        if plugin is None:
            raise ValueError(f"Apprise does not understand the URL {redact(url)}")
        service = CHAT_SCHEMES[scheme]
        if service == "slack":
            tokens = [getattr(plugin, n, None) for n in ("token_a", "token_b", "token_c")]
            if not all(tokens):
                raise ValueError("slack:// URLs for alerts must be incoming webhooks: slack://TokenA/TokenB/TokenC")
            endpoint = "https://hooks.slack.com/services/" + "/".join(tokens)
            return ChatChannel("slack", endpoint, timeout_s=timeout_s, min_severity=min_severity)
        token = plugin.key if service == "wecom" else plugin.token
        return ChatChannel(service, _ENDPOINTS[service].format(token=token), secret=getattr(plugin, "secret", None),
                           timeout_s=timeout_s, min_severity=min_severity)
    return AppriseChannel(url, timeout_s=timeout_s, min_severity=min_severity)


def apprise_channels_from_settings(alert_settings: Any) -> list:
    """One channel per ``alerts.apprise_urls`` entry; names made unique (``wecom``, ``wecom#2`` ...)."""
    out: list = []
    seen: dict[str, int] = {}
    for url in alert_settings.apprise_urls:
        channel = channel_from_url(url, timeout_s=alert_settings.timeout_s,
                                   min_severity=alert_settings.min_severity_apprise)
        seen[channel.name] = seen.get(channel.name, 0) + 1
        if seen[channel.name] > 1:
            channel.name = f"{channel.name}#{seen[channel.name]}"
        out.append(channel)
    return out
