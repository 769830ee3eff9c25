"""Data-quality and pipeline alerts: one model, three channels, grouping; see docs/alerts.md.

Usage::

    from etfuse.alerts import AlertDispatcher, alert_from_validation
    dispatcher = AlertDispatcher(settings)
    dispatcher.send(alert_from_validation(result.to_json(), kind="quarantined", report_url=report))
    dispatcher.flush()          # at the end of a run: digests of groups whose window has ended
"""

from etfuse.alerts.channels import (Channel, DeliveryError, JsonlChannel, PermanentDeliveryError, SmtpChannel,
                                    WebhookChannel, channels_from_settings, email_message, slack_payload)
from etfuse.alerts.dispatcher import (AlertDispatcher, ChannelResult, DigestOutcome, DispatchOutcome, alert_record,
                                      read_alert_log)
from etfuse.alerts.grouping import GroupStore
from etfuse.alerts.model import (SEVERITIES, Alert, DigestInfo, Severity, alert_from_exception,
                                 alert_from_validation, format_days, worst_severity)

__all__ = [
    "Alert", "AlertDispatcher", "Channel", "ChannelResult", "DeliveryError", "DigestInfo", "DigestOutcome",
    "DispatchOutcome", "GroupStore", "JsonlChannel", "PermanentDeliveryError", "SEVERITIES", "Severity",
    "SmtpChannel", "WebhookChannel", "alert_from_exception", "alert_from_validation", "alert_record",
    "channels_from_settings", "email_message", "format_days", "read_alert_log", "slack_payload", "worst_severity",
]
