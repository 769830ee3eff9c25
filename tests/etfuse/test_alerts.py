"""Alerts end to end: a real HTTP server (webhook) and a real SMTP server (aiosmtpd) on 127.0.0.1."""

from __future__ import annotations

import datetime as dt
import email
import email.policy
import json
import logging
import socket
import threading
import time
from contextlib import closing
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from pydantic import ValidationError

from etfuse.alerts import (Alert, AlertDispatcher, alert_from_exception, alert_from_validation, format_days,
                           read_alert_log, slack_payload)
from etfuse.errors import SourceFormatError
from etfuse.settings import load_settings
from tests.services import free_port

aiosmtpd_controller = pytest.importorskip("aiosmtpd.controller")
from aiosmtpd.smtp import AuthResult, LoginPassword  # noqa: E402

UTC = dt.timezone.utc
SMTP_PASSWORD = "s3cret-PW-7f3a9"


# ------------------------------------------------------------------------------------------ helpers
class FakeClock:
    def __init__(self, start: dt.datetime = dt.datetime(2021, 6, 1, 10, 0, tzinfo=UTC)) -> None:
        self.now = start

    def __call__(self) -> dt.datetime:
        return self.now

    def advance(self, **kw) -> None:
        self.now += dt.timedelta(**kw)


class Webhook:
    """A real HTTP server recording POST bodies; answers with queued statuses, then ``default``."""

    def __init__(self) -> None:
        self.requests: list[dict] = []
        self.statuses: list[int] = []
        self.default = 200
        hook = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                hook.requests.append({"path": self.path, "headers": dict(self.headers), "body": body})
                status = hook.statuses.pop(0) if hook.statuses else hook.default
                payload = b"ok" if status < 400 else b"server trouble"
                self.send_response(status)
                self.send_header("Content-Type", "text/plain")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/services/T0001/B0002/WEBHOOKTOKEN"
        self.thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.02},
                                       daemon=True)
        self.thread.start()

    def json(self, k: int = -1) -> dict:
        return json.loads(self.requests[k]["body"])

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


class Mailbox:
    """aiosmtpd handler that records every message with its session facts."""

    def __init__(self) -> None:
        self.messages: list[dict] = []

    async def handle_DATA(self, server, session, envelope):  # noqa: N802
        self.messages.append({"mail_from": envelope.mail_from, "rcpt_tos": list(envelope.rcpt_tos),
                              "message": email.message_from_bytes(envelope.content, policy=email.policy.default),
                              "login": session.auth_data.login if session.authenticated else None,
                              "tls": session.ssl is not None})
        return "250 Message accepted for delivery"


def authenticator(server, session, envelope, mechanism, auth_data):
    ok = (isinstance(auth_data, LoginPassword) and auth_data.login == b"etfuse"
          and auth_data.password == SMTP_PASSWORD.encode())
    return AuthResult(success=ok, handled=False, auth_data=auth_data if ok else None)


@pytest.fixture
def webhook():
    hook = Webhook()
    yield hook
    hook.close()


@pytest.fixture
def smtpd():
    box = Mailbox()
    port = free_port()
    controller = aiosmtpd_controller.Controller(box, hostname="127.0.0.1", port=port,
                                                authenticator=authenticator, auth_require_tls=False)
    controller.start()
    box.port = port
    yield box
    controller.stop()


def make_settings(settings, **alerts):
    base = dict(retries=2, retry_backoff_s=0.01, timeout_s=2.0)
    base.update(alerts)
    return load_settings(home=settings.home, region="test", alerts=base)


def smtp_config(box: Mailbox, **extra) -> dict:
    return dict(smtp_host="127.0.0.1", smtp_port=box.port, smtp_from="etfuse@qhmb.example.cn",
                smtp_to=["ops@qhmb.example.cn", "et-team@example.org"], smtp_local_hostname="etfuse-test",
                **extra)


def validation_result(file: str, *, checks=(("et_range", "critical"),), days=("2021-06-01",)) -> dict:
    outcomes = [{"check": name, "severity": sev, "success": False, "expectation": "expect_column_values_to_be_between",
                 "column": "et", "observed": {"min": -3.5, "max": 41.2, "unexpected_percent": 2.5},
                 "explain": f"{name}: ET outside [0, 20] mm on 2.5% of cells"} for name, sev in checks]
    outcomes.append({"check": "time_monotonic", "severity": "critical", "success": True,
                     "expectation": "expect_column_values_to_be_increasing", "column": "time", "observed": {}})
    return {"source": "era5land", "file": f"/data/landing/era5land/{file}", "days": list(days), "accepted": False,
            "outcomes": outcomes, "report_path": f"/data/reports/era5land/{file}.html"}


def records(settings, record: str | None = None) -> list[dict]:
    out = read_alert_log(settings)
    return [r for r in out if record is None or r["record"] == record]


# ------------------------------------------------------------------------------------------ model
def test_alert_from_validation_and_fingerprint():
    res = validation_result("ERA5L_20210601.nc", checks=(("et_range", "critical"), ("coverage", "warning")),
                            days=("2021-06-02", "2021-06-01", "2021-06-03"))
    a = alert_from_validation(res, kind="quarantined", report_url="http://reports.local/r/1.html")
    assert a.severity == "critical" and a.source == "era5land" and a.kind == "quarantined"
    assert a.checks == ["coverage", "et_range"]
    assert a.days == ["2021-06-01", "2021-06-02", "2021-06-03"]
    assert "et_range" in a.summary and "coverage" in a.summary and "ERA5L_20210601.nc" in a.summary
    assert "\n" not in a.summary and "time_monotonic" not in a.summary
    assert a.report_url == "http://reports.local/r/1.html"
    assert [f["check"] for f in a.details["failed"]] == ["et_range", "coverage"]
    assert a.details["failed"][0]["observed"]["max"] == 41.2
    # report_url falls back to the result's report_path, as a file:// URL
    b = alert_from_validation(validation_result("ERA5L_20210602.nc", days=("2021-06-02",)), kind="quarantined")
    assert b.report_url == "file:///data/reports/era5land/ERA5L_20210602.nc.html"
    # worst failed severity wins; only warnings -> warning
    w = alert_from_validation(validation_result("x.nc", checks=(("coverage", "warning"),)), kind="validation_warning")
    assert w.severity == "warning" and "accepted with warnings" in w.summary
    # identical problem on another file and other days: same fingerprint; other checks/severity/kind: not
    same = alert_from_validation(validation_result("OTHER.nc", checks=(("coverage", "warning"), ("et_range", "critical")),
                                                   days=("2022-01-01",)), kind="quarantined")
    assert same.fingerprint == a.fingerprint
    assert alert_from_validation(res, kind="validation_warning").fingerprint != a.fingerprint
    assert alert_from_validation(validation_result("ERA5L_20210601.nc"), kind="quarantined").fingerprint != a.fingerprint
    assert a.model_copy(update={"severity": "warning"}).fingerprint != a.fingerprint
    # a JSON-lines record reads back into the same alert
    assert Alert.model_validate(json.loads(a.model_dump_json())) == a
    with pytest.raises(ValidationError):
        Alert(severity="fatal", source="era5land", kind="x", summary="s")
    with pytest.raises(ValidationError, match="ISO date"):
        Alert(severity="info", source="era5land", kind="x", summary="s", days=["June 1st"])


def test_alert_from_exception_groups_by_type_and_format_days():
    a = alert_from_exception(SourceFormatError("/l/a.nc", "no variable e"), source="era5land", kind="unreadable",
                             file="/l/a.nc", days=[dt.date(2021, 6, 1)], step="read")
    b = alert_from_exception(SourceFormatError("/l/b.nc", "bad time axis"), source="era5land", kind="unreadable",
                             file="/l/b.nc", step="read")
    c = alert_from_exception(KeyError("x"), source="era5land", kind="unreadable", step="read")
    assert a.fingerprint == b.fingerprint != c.fingerprint
    assert a.severity == "critical" and "SourceFormatError" in a.summary and "a.nc" in a.summary
    assert "Traceback" in a.details["traceback"] or a.details["traceback"]
    assert format_days(["2021-06-03", "2021-06-01", "2021-06-02", "2021-06-05"]) == \
        "2021-06-01..2021-06-03, 2021-06-05 (4 days)"


def test_alert_settings_validation_and_secrets():
    with pytest.raises(ValidationError, match="smtp_to"):
        load_settings(alerts={"smtp_host": "mail", "smtp_from": "a@b.cn"})
    with pytest.raises(ValidationError, match="http"):
        load_settings(alerts={"webhook_url": "hooks.slack.com/x"})
    with pytest.raises(ValidationError, match="exclusive"):
        load_settings(alerts={"smtp_host": "m", "smtp_from": "a@b", "smtp_to": "c@d", "smtp_starttls": True,
                              "smtp_ssl": True})
    s = load_settings(alerts={"smtp_host": "m", "smtp_from": "a@b", "smtp_to": "c@d, e@f", "smtp_user": "u",
                              "smtp_password": SMTP_PASSWORD, "webhook_url": "https://hooks.example/T/B/TOKEN"})
    assert s.alerts.smtp_to == ("c@d", "e@f")
    for text in (s.to_yaml(), repr(s), str(s.alerts)):
        assert SMTP_PASSWORD not in text and "TOKEN" not in text


# ------------------------------------------------------------------------------------------ channels
def test_webhook_receives_slack_json(settings, webhook):
    s = make_settings(settings, webhook_url=webhook.url)
    alert = alert_from_validation(validation_result("ERA5L_20210601.nc"), kind="quarantined",
                                  report_url="http://reports.local/era5land/ERA5L_20210601.html")
    out = AlertDispatcher(s).send(alert)
    assert out.delivered and not out.suppressed
    assert [(r.channel, r.ok, r.attempts) for r in out.deliveries] == [("jsonl", True, 1), ("webhook", True, 1)]
    assert len(webhook.requests) == 1
    req = webhook.requests[0]
    assert req["path"] == "/services/T0001/B0002/WEBHOOKTOKEN"
    assert req["headers"]["Content-Type"].startswith("application/json")
    body = webhook.json()
    text = body["text"]
    for fact in ("CRITICAL", "era5land", "/data/landing/era5land/ERA5L_20210601.nc", alert.summary,
                 "http://reports.local/era5land/ERA5L_20210601.html", "2021-06-01"):
        assert fact in text, fact
    assert body["blocks"][0]["type"] == "header" and "CRITICAL" in body["blocks"][0]["text"]["text"]
    blocks = json.dumps(body["blocks"])
    assert "<http://reports.local/era5land/ERA5L_20210601.html|open the validation report>" in blocks
    assert "et_range (critical)" in blocks and alert.fingerprint in blocks
    assert all(b["type"] in {"header", "section", "context"} for b in body["blocks"])
    # the JSON-lines log has the same alert
    (line,) = records(s, "alert")
    assert line["id"] == alert.id and line["suppressed"] is False and line["group_id"] == out.group_id
    assert Alert.from_record(line) == alert and line["fingerprint"] == alert.fingerprint


def test_slack_text_is_escaped():
    a = Alert(severity="warning", source="gleam", kind="k", summary="values <0 & >20 found")
    payload = slack_payload(a)
    assert "values &lt;0 &amp; &gt;20 found" in payload["text"]


def test_email_received_by_smtp_server(settings, smtpd):
    s = make_settings(settings, **smtp_config(smtpd))
    alert = alert_from_validation(validation_result("ERA5L_20210601.nc"), kind="quarantined")
    out = AlertDispatcher(s).send(alert)
    assert out.delivered, out
    (mail,) = smtpd.messages
    assert mail["mail_from"] == "etfuse@qhmb.example.cn"
    assert mail["rcpt_tos"] == ["ops@qhmb.example.cn", "et-team@example.org"]
    msg = mail["message"]
    assert msg["From"] == "etfuse@qhmb.example.cn"
    assert msg["To"] == "ops@qhmb.example.cn, et-team@example.org"
    assert msg["Subject"].startswith("[etfuse] CRITICAL era5land: ERA5L_20210601.nc quarantined")
    assert msg["X-Etfuse-Fingerprint"] == alert.fingerprint
    body = msg.get_content()
    for fact in ("CRITICAL", "era5land", "/data/landing/era5land/ERA5L_20210601.nc", alert.summary,
                 "file:///data/reports/era5land/ERA5L_20210601.nc.html", "et_range (critical)", "41.2"):
        assert fact in body, fact
    assert mail["login"] is None                                   # no login unless configured


def test_smtp_login_and_the_password_is_never_written(settings, smtpd, caplog):
    caplog.set_level(logging.DEBUG, logger="etfuse")
    s = make_settings(settings, **smtp_config(smtpd, smtp_user="etfuse", smtp_password=SMTP_PASSWORD))
    assert AlertDispatcher(s).send(Alert(severity="critical", source="flow", kind="flow_failed",
                                         summary="ingest failed")).delivered
    assert smtpd.messages[-1]["login"] == b"etfuse"
    # wrong password: 535 is permanent, so one attempt, then channel_failed; the password is nowhere
    bad = make_settings(settings, **smtp_config(smtpd, smtp_user="etfuse", smtp_password=SMTP_PASSWORD + "-wrong"))
    out = AlertDispatcher(bad).send(Alert(severity="critical", source="flow", kind="publish_failed", summary="again"))
    (email_result,) = [r for r in out.deliveries if r.channel == "email"]
    assert not email_result.ok and email_result.permanent and email_result.attempts == 1
    assert "535" in email_result.error
    (failed,) = records(s, "channel_failed")
    assert failed["channel"] == "email" and failed["target"] == f"smtp://127.0.0.1:{smtpd.port}"
    assert len(smtpd.messages) == 1
    text = (s.home / "alerts" / "alerts.jsonl").read_text()
    assert SMTP_PASSWORD not in text and SMTP_PASSWORD not in caplog.text


def _self_signed(tmp_path):
    import ipaddress
    import ssl

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "etfuse test smtp")])
    now = dt.datetime.now(UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - dt.timedelta(days=1))
            .not_valid_after(now + dt.timedelta(days=2))
            .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), False)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), True)
            .sign(key, hashes.SHA256()))
    cert_file, key_file = tmp_path / "smtp.pem", tmp_path / "smtp.key"
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(cert_file, key_file)
    return cert_file, ctx


def test_starttls_with_a_private_ca_then_login(settings, tmp_path):
    pytest.importorskip("cryptography")
    cert_file, server_ctx = _self_signed(tmp_path)
    box, port = Mailbox(), free_port()
    controller = aiosmtpd_controller.Controller(box, hostname="127.0.0.1", port=port, tls_context=server_ctx,
                                                require_starttls=True, authenticator=authenticator)
    controller.start()
    try:
        box.port = port
        s = make_settings(settings, **smtp_config(box, smtp_user="etfuse", smtp_password=SMTP_PASSWORD,
                                                  smtp_starttls=True, smtp_ca_file=str(cert_file)))
        out = AlertDispatcher(s).send(Alert(severity="warning", source="gleam", kind="validation_warning",
                                            summary="late file"))
        assert out.delivered, out
        (mail,) = box.messages
        assert mail["tls"] and mail["login"] == b"etfuse"
        # without the private CA the certificate is not trusted: permanent failure, no retries
        untrusted = make_settings(settings, **smtp_config(box, smtp_starttls=True))
        out = AlertDispatcher(untrusted).send(Alert(severity="warning", source="gleam", kind="x", summary="y"))
        (r,) = [r for r in out.deliveries if r.channel == "email"]
        assert not r.ok and r.permanent and r.attempts == 1 and "certificate" in r.error
    finally:
        controller.stop()


# ------------------------------------------------------------------------------------------ grouping
def test_grouping_digest_and_restart(settings, webhook, smtpd):
    s = make_settings(settings, webhook_url=webhook.url, group_window_minutes=60, **smtp_config(smtpd))
    clock = FakeClock()
    first = AlertDispatcher(s, clock=clock)
    files = [f"ERA5L_202106{d:02d}.nc" for d in range(1, 6)]
    outcomes = []
    for k, name in enumerate(files):
        dispatcher = first if k < 3 else AlertDispatcher(s, clock=clock)      # a restart half-way
        outcomes.append(dispatcher.send(alert_from_validation(
            validation_result(name, days=(f"2021-06-{k + 1:02d}",)), kind="quarantined")))
        clock.advance(minutes=5)
    assert [o.suppressed for o in outcomes] == [False, True, True, True, True]
    assert len({o.group_id for o in outcomes}) == 1
    assert len(webhook.requests) == 1 and len(smtpd.messages) == 1
    lines = records(s, "alert")
    assert len(lines) == 5 and sum(line["suppressed"] for line in lines) == 4
    assert {line["group_id"] for line in lines} == {outcomes[0].group_id}
    assert [r.channel for r in outcomes[1].deliveries] == ["jsonl"]

    # a different problem (another check) is delivered at once
    other = AlertDispatcher(s, clock=clock).send(alert_from_validation(
        validation_result("ERA5L_20210601.nc", checks=(("coverage", "critical"),)), kind="quarantined"))
    assert not other.suppressed and other.delivered and other.group_id != outcomes[0].group_id
    assert len(webhook.requests) == 2 and len(smtpd.messages) == 2

    # inside the window nothing is flushed; after it, one digest names the 4 suppressed files
    assert AlertDispatcher(s, clock=clock).flush() == []
    clock.advance(minutes=60)
    restarted = AlertDispatcher(s, clock=clock)
    (digest,) = restarted.flush()
    assert digest.count == 4 and digest.group_id == outcomes[0].group_id
    assert digest.files == [f"/data/landing/era5land/{n}" for n in files[1:]]
    assert digest.days == ["2021-06-02", "2021-06-03", "2021-06-04", "2021-06-05"]
    assert all(r.ok for r in digest.deliveries) and {r.channel for r in digest.deliveries} == {"webhook", "email"}
    assert len(webhook.requests) == 3 and len(smtpd.messages) == 3
    text = webhook.json()["text"]
    assert "4 more like this since 2021-06-01 10:00 UTC (quarantined; checks et_range): files ERA5L_20210602.nc" in text
    for name in files[1:]:
        assert name in json.dumps(webhook.json())
    (grouped,) = [b for b in webhook.json()["blocks"] if b.get("text", {}).get("text", "").startswith("*Grouped*")]
    assert "*Files* (4)" in grouped["text"]["text"] and files[0] not in grouped["text"]["text"]
    assert files[0] not in text                                          # only the suppressed files are listed
    mail = smtpd.messages[-1]["message"]
    assert "4 more like this" in mail["Subject"]
    body = mail.get_content()
    assert all(f"/data/landing/era5land/{n}" in body for n in files[1:])
    (logged,) = records(s, "digest")
    assert logged["digest"]["count"] == 4 and logged["group_id"] == outcomes[0].group_id
    assert logged["fingerprint"] == outcomes[0].alert.fingerprint == Alert.from_record(logged).fingerprint
    assert Alert.from_record(logged).digest.files_total == 4
    # once only, also across instances
    assert restarted.flush() == [] and AlertDispatcher(s, clock=clock).flush() == []
    assert len(webhook.requests) == 3


def test_next_send_after_the_window_delivers_the_digest_first(settings, webhook):
    s = make_settings(settings, webhook_url=webhook.url, group_window_minutes=30)
    clock = FakeClock()
    d = AlertDispatcher(s, clock=clock)
    for day in (1, 2, 3):
        d.send(alert_from_validation(validation_result(f"f{day}.nc", days=(f"2021-06-0{day}",)), kind="quarantined"))
        clock.advance(minutes=1)
    clock.advance(minutes=30)
    out = d.send(alert_from_validation(validation_result("f9.nc", days=("2021-06-09",)), kind="quarantined"))
    assert not out.suppressed and len(out.digests) == 1 and out.digests[0].count == 2
    assert [r["body"] for r in webhook.requests[1:]] and len(webhook.requests) == 3
    assert "2 more like this" in webhook.json(1)["text"]                # the digest before the new alert
    assert "f9.nc" in webhook.json(2)["text"]
    assert [r["record"] for r in records(s)] == ["alert", "alert", "alert", "digest", "alert"]


def test_flush_force_and_zero_window(settings, webhook):
    s = make_settings(settings, webhook_url=webhook.url, group_window_minutes=60)
    d = AlertDispatcher(s, clock=FakeClock())
    for name in ("a.nc", "b.nc"):
        d.send(alert_from_validation(validation_result(name), kind="quarantined"))
    assert d.flush() == [] and len(d.flush(force=True)) == 1 and len(webhook.requests) == 2
    s0 = make_settings(settings, webhook_url=webhook.url, group_window_minutes=0)
    d0 = AlertDispatcher(s0, clock=FakeClock(dt.datetime(2022, 1, 1, tzinfo=UTC)))
    outs = [d0.send(alert_from_validation(validation_result(n), kind="quarantined")) for n in ("c.nc", "d.nc")]
    assert not any(o.suppressed for o in outs) and len(webhook.requests) == 4 and d0.flush() == []


def test_two_dispatchers_share_the_group_state(settings):
    s = make_settings(settings, group_window_minutes=60)
    results, errors = [], []

    def run(k):
        try:
            d = AlertDispatcher(s)
            for i in range(10):
                results.append(d.send(alert_from_validation(validation_result(f"p{k}_{i}.nc"), kind="quarantined")))
        except Exception as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(k,)) for k in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert sum(not r.suppressed for r in results) == 1 and len({r.group_id for r in results}) == 1
    assert len(records(s, "alert")) == 20


def test_min_severity_per_channel(settings, webhook, smtpd):
    s = make_settings(settings, webhook_url=webhook.url, **smtp_config(smtpd))       # e-mail from warning up
    out = AlertDispatcher(s).send(Alert(severity="info", source="gleam", kind="revision",
                                        summary="GLEAM v4.2a replaces 2021"))
    assert [r.channel for r in out.deliveries] == ["jsonl", "webhook"]
    assert len(webhook.requests) == 1 and smtpd.messages == []


# ------------------------------------------------------------------------------------------ failures
def test_webhook_500_is_retried_then_logged_and_other_channels_deliver(settings, webhook, smtpd, caplog):
    webhook.default = 500
    s = make_settings(settings, webhook_url=webhook.url, retries=2, **smtp_config(smtpd))
    out = AlertDispatcher(s).send(alert_from_validation(validation_result("x.nc"), kind="quarantined"))
    assert len(webhook.requests) == 3                                       # 1 + retries
    by = {r.channel: r for r in out.deliveries}
    assert by["jsonl"].ok and by["email"].ok and len(smtpd.messages) == 1
    assert not by["webhook"].ok and by["webhook"].attempts == 3 and "HTTP 500" in by["webhook"].error
    (failed,) = records(s, "channel_failed")
    assert failed["channel"] == "webhook" and failed["attempts"] == 3 and failed["alert_id"] == out.alert.id
    assert failed["target"].startswith("http://127.0.0.1:")
    assert "WEBHOOKTOKEN" not in (s.home / "alerts" / "alerts.jsonl").read_text()    # the URL's token stays secret
    assert "not delivered by webhook" in caplog.text and "WEBHOOKTOKEN" not in caplog.text


def test_webhook_recovers_after_a_transient_error_and_4xx_is_not_retried(settings, webhook):
    webhook.statuses = [503]
    s = make_settings(settings, webhook_url=webhook.url, retries=2)
    d = AlertDispatcher(s)
    out = d.send(Alert(severity="warning", source="modis", kind="k1", summary="first"))
    assert out.delivered and out.deliveries[1].attempts == 2 and len(webhook.requests) == 2
    webhook.statuses = [404]
    out = d.send(Alert(severity="warning", source="modis", kind="k2", summary="second"))
    assert not out.delivered and out.deliveries[1].permanent and len(webhook.requests) == 3
    assert records(s, "channel_failed")[0]["permanent"] is True


def test_webhook_on_a_closed_port_is_bounded_and_rests(settings):
    url = f"http://127.0.0.1:{free_port()}/hook"
    s = make_settings(settings, webhook_url=url, retries=2, retry_backoff_s=0.05, channel_cooldown_s=60)
    d = AlertDispatcher(s)
    start = time.monotonic()
    out = d.send(Alert(severity="critical", source="flow", kind="flow_failed", summary="boom"))
    assert time.monotonic() - start < 2.0
    (r,) = [r for r in out.deliveries if r.channel == "webhook"]
    assert not r.ok and r.attempts == 3 and "cannot reach" in r.error
    assert out.deliveries[0].ok and len(records(s, "alert")) == 1
    # the channel rests: the next alert is logged as not tried instead of waiting again
    out = d.send(Alert(severity="critical", source="flow", kind="flow_failed2", summary="boom again"))
    (r,) = [r for r in out.deliveries if r.channel == "webhook"]
    assert r.skipped and r.attempts == 0
    assert [f["skipped"] for f in records(s, "channel_failed")] == [False, True]


def test_webhook_that_never_answers_is_bounded_by_the_timeout(settings):
    with closing(socket.socket()) as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)                                 # accepts connections, never answers
        url = f"http://127.0.0.1:{silent.getsockname()[1]}/hook"
        s = make_settings(settings, webhook_url=url, timeout_s=0.3, retries=1, retry_backoff_s=0.05)
        start = time.monotonic()
        out = AlertDispatcher(s).send(Alert(severity="critical", source="flow", kind="flow_failed", summary="x"))
        elapsed = time.monotonic() - start
    assert 0.6 <= elapsed < 2.5, elapsed
    (r,) = [r for r in out.deliveries if r.channel == "webhook"]
    assert not r.ok and r.attempts == 2


def test_smtp_down_does_not_block_and_webhook_still_delivers(settings, webhook):
    s = make_settings(settings, webhook_url=webhook.url, smtp_host="127.0.0.1", smtp_port=free_port(),
                      smtp_from="etfuse@example.cn", smtp_to="ops@example.cn", retries=2, retry_backoff_s=0.05)
    start = time.monotonic()
    out = AlertDispatcher(s).send(Alert(severity="critical", source="cma", kind="quarantined", summary="bad file",
                                        file="SURF_CLI_CHN_MUL_DAY-EVP-13240-202106.TXT"))
    assert time.monotonic() - start < 2.0
    by = {r.channel: r for r in out.deliveries}
    assert by["jsonl"].ok and by["webhook"].ok and not by["email"].ok and by["email"].attempts == 3
    assert len(webhook.requests) == 1
    (failed,) = records(s, "channel_failed")
    assert failed["channel"] == "email" and failed["source"] == "cma"


def test_a_broken_channel_object_never_raises(settings):
    class Broken:
        name, min_severity, target = "broken", "info", "nowhere"

        def deliver(self, alert, *, group_id):
            raise RuntimeError("bug in a channel")

    s = make_settings(settings, retries=1, retry_backoff_s=0.0)
    out = AlertDispatcher(s, channels=[Broken()]).send(Alert(severity="info", source="x", kind="k", summary="s"))
    assert out.failed_channels == ("broken",) and "RuntimeError: bug in a channel" in out.deliveries[1].error


def test_a_stuck_channel_is_abandoned_within_its_time_budget(settings):
    release = threading.Event()

    class Stuck:                     # like a DNS lookup that no socket timeout covers
        name, min_severity, target = "stuck", "info", "nowhere"

        def deliver(self, alert, *, group_id):
            release.wait(10)

    s = make_settings(settings, timeout_s=0.1, retries=0, retry_backoff_s=0.0)
    start = time.monotonic()
    out = AlertDispatcher(s, channels=[Stuck()]).send(Alert(severity="info", source="x", kind="k", summary="s"))
    release.set()
    assert time.monotonic() - start < 2.0
    assert out.deliveries[0].ok and "abandoned" in out.deliveries[1].error
    assert records(s, "channel_failed")[0]["channel"] == "stuck"
