"""Alerts (``include/segmentation/alerts.py``): any Airflow notifier by class path, mail by SMTP connection."""

from __future__ import annotations

import pytest
from airflow.sdk import BaseNotifier

from include.segmentation import alerts
from include.segmentation.config import AlertsConfig, SegmentationConfig

RECEIVED: list[tuple[str, dict]] = []


class Recorder(BaseNotifier):
    """A stand-in channel (as Slack's would be): records what it was asked to send."""

    def __init__(self, channel: str, text: str) -> None:
        super().__init__()
        self.channel, self.text = channel, text

    def notify(self, context) -> None:
        RECEIVED.append((self.channel, {"text": self.text, "run_id": context["run_id"]}))


class Broken(BaseNotifier):
    def __init__(self, text: str) -> None:
        super().__init__()

    def notify(self, context) -> None:
        raise ConnectionError("channel down")


def test_any_notifier_by_class_path_gets_the_alert():
    RECEIVED.clear()
    config = AlertsConfig(
        notifiers=[{"notifier": f"{__name__}.Recorder", "kwargs": {"channel": "#segments"}, "message_arg": "text"}]
    )
    assert alerts.send(config, "Segments of 2013-12 changed", "k 4 -> 3", {"run_id": "r1"}) == 1
    assert RECEIVED == [("#segments", {"text": "Segments of 2013-12 changed\n\nk 4 -> 3", "run_id": "r1"})]


def test_no_channel_configured_sends_nothing_and_a_broken_channel_is_logged_not_raised(caplog):
    assert alerts.send(AlertsConfig(), "subject", "text", {"run_id": "r1"}) == 0
    broken = AlertsConfig(notifiers=[{"notifier": f"{__name__}.Broken", "message_arg": "text"}])
    assert alerts.send(broken, "subject", "text", {"run_id": "r1"}) == 0
    assert "Broken could not deliver 'subject'" in caplog.text
    # One channel that cannot be built (a typo, not installed, not a notifier) does not silence the others.
    RECEIVED.clear()
    good = {"notifier": f"{__name__}.Recorder", "kwargs": {"channel": "#s"}}
    for bad in ("no_such_package.Notifier", "os.system", "builtins.exit"):
        config = AlertsConfig(notifiers=[{"notifier": bad, "message_arg": "command"}, good])
        assert alerts.send(config, "subject", "touch /tmp/never", {"run_id": "r1"}) == 1
        assert f"alerts: 'subject' not sent through {bad}" in caplog.text
    assert len(RECEIVED) == 3
    with pytest.raises(TypeError, match="cannot build os.system: not a subclass of airflow.sdk.BaseNotifier"):
        alerts._built(AlertsConfig(notifiers=[{"notifier": "os.system"}]).notifiers[0], "s", "t")


def test_mail_goes_through_the_smtp_connection_with_links_kept():
    config = AlertsConfig(email_to=["a@example.com"], smtp_conn_id="smtp_alerts")
    (mail,) = alerts.channels(config, "Segments failed", "Task log: https://ui/dags/x?a=1&b=2\n[Report](https://ui/r)")
    assert type(mail).__name__ == "SmtpNotifier"
    assert mail.smtp_conn_id == "smtp_alerts"
    assert mail.to == ["a@example.com"]
    assert mail.html_content == (
        'Task log: <a href="https://ui/dags/x?a=1&amp;b=2">https://ui/dags/x?a=1&amp;b=2</a><br>\n'
        '<a href="https://ui/r">Report</a>'
    )


def test_links_name_the_month_s_report_and_the_task_log():
    config = SegmentationConfig.model_validate({"alerts": {"ui_url": "https://airflow.example.com/"}})
    run_id = "manual__2013-12-01T00:00:00+00:00"
    assert alerts.report_url(config, run_id) == (
        "https://airflow.example.com/segments/by-run?run_id=manual__2013-12-01T00%3A00%3A00%2B00%3A00"
    )
    assert alerts.task_log_url(config, run_id, "check_warehouse").endswith(
        "/dags/market_segmentation/runs/manual__2013-12-01T00%3A00%3A00%2B00%3A00/tasks/check_warehouse"
    )


def test_a_large_change_written_without_asking_is_announced_and_an_asked_one_is_not():
    from types import SimpleNamespace

    import pandas as pd

    RECEIVED.clear()
    config = SegmentationConfig.model_validate(
        {"alerts": {"notifiers": [{"notifier": f"{__name__}.Recorder", "kwargs": {"channel": "#s"}}]}}
    )
    run = SimpleNamespace(config=config, month=pd.Period("2013-12", "M"))
    changed = {"ask": False, "change_reasons": ["k changed from 4 to 3"], "body": "- k: 4 -> 3"}
    assert alerts.announce_change(run, changed, {"run_id": "r"}) == 1
    assert RECEIVED[0][1]["text"].startswith("Market segments of 2013-12 changed\n\nWritten without approval")
    assert alerts.announce_change(run, changed | {"ask": True}, {"run_id": "r"}) == 0  # the request said it
    assert alerts.announce_change(run, {"ask": False, "change_reasons": []}, {"run_id": "r"}) == 0
