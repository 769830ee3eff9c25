"""Apprise channels against receivers on 127.0.0.1: WeCom, DingTalk, Feishu and Slack answering 200
with an error body, JSON webhooks through Apprise, e-mail through Apprise to aiosmtpd."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import threading
import urllib.parse
from http.server import BaseHTTPRequestHandler, HTTPServer

import pytest

from etfuse.alerts import Alert, AlertDispatcher
from etfuse.alerts.apprise_channels import ChatChannel, body_error, channel_from_url
from etfuse.alerts.dispatcher import public_report_link
from etfuse.settings import load_settings
from tests.services import free_port

aiosmtpd_controller = pytest.importorskip("aiosmtpd.controller")

OK = {"wecom": b'{"errcode":0,"errmsg":"ok"}', "dingtalk": b'{"errcode":0,"errmsg":"ok"}',
      "feishu": b'{"code":0,"msg":"success","data":{}}', "slack": b"ok"}
ERROR = {"wecom": b'{"errcode":93000,"errmsg":"invalid webhook url"}',
         "dingtalk": b'{"errcode":310000,"errmsg":"keywords not in content"}',
         "feishu": b'{"code":19001,"msg":"param invalid: incoming webhook access token invalid","data":{}}',
         "slack": b"invalid_token"}
ERROR_CODE = {"wecom": "93000", "dingtalk": "310000", "feishu": "19001", "slack": "invalid_token"}


class Receiver:
    """Answers every POST/GET with ``status`` and ``body``; records method, path and body."""

    def __init__(self) -> None:
        self.status, self.body, self.requests = 200, b"ok", []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def _answer(self):
                length = int(self.headers.get("Content-Length") or 0)
                outer.requests.append({"method": self.command, "path": self.path,
                                       "body": self.rfile.read(length) if length else b"",
                                       "content_type": self.headers.get("Content-Type")})
                self.send_response(outer.status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(outer.body)))
                self.end_headers()
                self.wfile.write(outer.body)

            do_POST = do_GET = _answer  # noqa: N815 - http.server API

            def log_message(self, *args):
                pass

        self.server = HTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_port
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def json(self, k: int = -1) -> dict:
        return json.loads(self.requests[k]["body"])

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receiver():
    r = Receiver()
    yield r
    r.close()


def _alert(**kw) -> Alert:
    base = dict(severity="critical", source="era5land", kind="quarantined", file="era5land_2024_05.nc",
                days=["2024-05-01"], checks=["et_range"], summary="era5land_2024_05.nc quarantined: ET out of range")
    base.update(kw)
    return Alert(**base)


def _settings(settings, urls, **extra):
    return load_settings(home=settings.home, region="test",
                         alerts={"apprise_urls": urls, "retries": 0, "timeout_s": 2.0, "group_window_minutes": 0,
                                 "min_severity_apprise": "info", "channel_cooldown_s": 0, **extra})


def _result(outcome, name):
    return next(d for d in outcome.deliveries if d.channel == name)


@pytest.mark.parametrize("service", ["wecom", "dingtalk", "feishu", "slack"])
def test_chat_channel_checks_the_body(settings, receiver, service):
    url = f"{service}+http://127.0.0.1:{receiver.port}/hook/send?key=abc"
    dispatcher = AlertDispatcher(_settings(settings, [url]))
    assert [c.name for c in dispatcher.channels] == [service]
    receiver.body = OK[service]
    outcome = dispatcher.send(_alert())
    assert _result(outcome, service).ok, outcome
    got = receiver.json()
    text = got["content"]["text"] if service == "feishu" else got["text"] if service == "slack" else got["text"]["content"]
    assert "CRITICAL era5land/quarantined" in text and "ET out of range" in text and "2024-05-01" in text
    if service in ("wecom", "dingtalk"):
        assert got["msgtype"] == "text"
    if service == "feishu":
        assert got["msg_type"] == "text"
    assert receiver.requests[-1]["path"] == "/hook/send?key=abc"

    receiver.body = ERROR[service]                 # HTTP 200 with an error in the body: not delivered
    failed = _result(dispatcher.send(_alert(kind="unreadable")), service)
    assert not failed.ok and ERROR_CODE[service] in failed.error, failed
    assert len(receiver.requests) == 2

    receiver.status, receiver.body = 404, b"no such hook"
    gone = _result(dispatcher.send(_alert(kind="other")), service)
    assert not gone.ok and gone.permanent and "404" in gone.error


def test_dingtalk_signature(receiver):
    secret = "SEC0123456789abcdef"
    channel = channel_from_url(f"dingtalk+http://127.0.0.1:{receiver.port}/robot/send?access_token=tok&secret={secret}",
                               timeout_s=2.0, min_severity="info")
    receiver.body = OK["dingtalk"]
    channel.deliver(_alert(), group_id=None)
    query = urllib.parse.parse_qs(urllib.parse.urlsplit(receiver.requests[-1]["path"]).query)
    assert query["access_token"] == ["tok"] and "secret" not in query       # the secret never travels
    stamp = query["timestamp"][0]
    expected = base64.b64encode(hmac.new(secret.encode(), f"{stamp}\n{secret}".encode(), hashlib.sha256).digest())
    assert query["sign"][0] == expected.decode()


def test_apprise_url_forms_reach_the_services_endpoints():
    wecom = channel_from_url("wecombot://KEY123", timeout_s=1, min_severity="info")
    assert isinstance(wecom, ChatChannel) and wecom._url == "https://qyapi.weixin.qq.com/cgi-bin/webhook/send?key=KEY123"
    ding = channel_from_url("dingtalk://mysecret@abcdef0123456789", timeout_s=1, min_severity="info")
    assert ding._url.endswith("access_token=abcdef0123456789") and ding._secret == "mysecret"
    assert "timestamp=" in ding._signed_url() and "sign=" in ding._signed_url()
    feishu = channel_from_url("feishu://abcdefg1234567", timeout_s=1, min_severity="info")
    assert feishu._url == "https://open.feishu.cn/open-apis/bot/v2/hook/abcdefg1234567"
    slack = channel_from_url("slack://T1JJ3T3L2/A1BRTD4JD/TIiajkdnlazkcOXrIdevi7", timeout_s=1, min_severity="info")
    assert slack._url == "https://hooks.slack.com/services/T1JJ3T3L2/A1BRTD4JD/TIiajkdnlazkcOXrIdevi7"
    assert "KEY123" not in wecom.target and "TIiaj" not in slack.target
    with pytest.raises(ValueError):
        channel_from_url("nosuchservice://x", timeout_s=1, min_severity="info")


def test_body_error_rules():
    assert body_error("wecom", 200, b'{"errcode":0}') is None
    assert "45009" in body_error("wecom", 200, b'{"errcode":45009,"errmsg":"api freq out of limit"}')
    assert body_error("feishu", 200, b'{"StatusCode":0,"StatusMessage":"success"}') is None
    assert "not JSON" in body_error("dingtalk", 200, b"<html>proxy error</html>")
    assert body_error("slack", 200, b"ok\n") is None


def test_json_webhook_through_apprise(settings, receiver):
    dispatcher = AlertDispatcher(_settings(settings, [f"json://127.0.0.1:{receiver.port}/alerts"]))
    outcome = dispatcher.send(_alert())
    assert _result(outcome, "apprise:json").ok
    got = receiver.json()
    assert receiver.requests[-1]["path"] == "/alerts"
    assert "ET out of range" in got["title"] and "Severity : CRITICAL" in got["message"] and got["type"] == "failure"
    receiver.status = 500
    failed = _result(dispatcher.send(_alert(kind="x")), "apprise:json")
    assert not failed.ok and "not delivered" in failed.error


class Mailbox:
    def __init__(self) -> None:
        self.messages: list = []

    async def handle_DATA(self, server, session, envelope):  # noqa: N802 - aiosmtpd API
        self.messages.append((envelope.mail_from, list(envelope.rcpt_tos), envelope.content.decode("utf-8", "replace")))
        return "250 Message accepted for delivery"


def test_email_through_apprise(settings):
    box, port = Mailbox(), free_port()
    controller = aiosmtpd_controller.Controller(box, hostname="127.0.0.1", port=port)
    controller.start()
    try:
        url = f"mailto://127.0.0.1:{port}?from=etfuse@example.org&to=ops@example.org&secure=no&user=etfuse"
        dispatcher = AlertDispatcher(_settings(settings, [url]))
        outcome = dispatcher.send(_alert())
        assert _result(outcome, "apprise:mailto").ok, outcome
        assert len(box.messages) == 1
        sender, rcpt, content = box.messages[0]
        assert sender == "etfuse@example.org" and rcpt == ["ops@example.org"]
        assert "ET out of range" in content
    finally:
        controller.stop()
    failed = _result(AlertDispatcher(_settings(settings, [url])).send(_alert(kind="y")), "apprise:mailto")
    assert not failed.ok                                          # the server is gone


def test_report_links_become_public(settings):
    s = _settings(settings, [], reports_base_url="https://etfuse.example.org/reports/")
    report = s.folder("reports") / "era5land" / "2024-05-01" / "file a-1234abcd.html"
    report.parent.mkdir(parents=True)
    report.write_text("<html></html>")
    alert = public_report_link(_alert(report_url=str(report)), s)
    assert alert.report_url == "https://etfuse.example.org/reports/era5land/2024-05-01/file%20a-1234abcd.html"
    outside = public_report_link(_alert(report_url="/etc/passwd"), s)
    assert outside.report_url.startswith("file://")
    assert public_report_link(_alert(report_url=str(report)), settings).report_url.startswith("file://")
