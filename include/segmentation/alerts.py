"""Alerts through Airflow's notifiers: a failed run, an approval request, a large change written.

``config.alerts`` says who hears: ``email_to`` through the SMTP connection ``smtp_conn_id`` (the
provider's ``SmtpNotifier``), and any other Airflow notifier (Slack, Teams, PagerDuty...) by class
path in ``notifiers``. Nothing is hard-wired: with neither, no alert is sent. Every alert names the
month and links to the run's report (``/segments/by-run``) and, for a failure, to the failed task's
log. An alert that cannot be delivered is logged, never raised: it must not change the run's outcome.
"""

from __future__ import annotations

import html
import importlib
import logging
import re
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from airflow.sdk import BaseNotifier

if TYPE_CHECKING:
    from include.segmentation.config import AlertsConfig, SegmentationConfig

log = logging.getLogger(__name__)

DAG_ID = "market_segmentation"


def ui_url(config: SegmentationConfig) -> str:
    """The Airflow UI's address for links: ``alerts.ui_url``, else Airflow's ``[api] base_url``."""
    if config.alerts.ui_url:
        return config.alerts.ui_url.rstrip("/")
    from airflow.configuration import conf

    return (conf.get("api", "base_url", fallback="") or "http://localhost:8080").rstrip("/")


def report_url(config: SegmentationConfig, run_id: str) -> str:
    """The run's report in the UI plugin (a page saying why when the run has none)."""
    return f"{ui_url(config)}/segments/by-run?run_id={quote(run_id, safe='')}"


def task_log_url(config: SegmentationConfig, run_id: str, task_id: str) -> str:
    """The task's page (with its log) in the Airflow UI."""
    return f"{ui_url(config)}/dags/{DAG_ID}/runs/{quote(run_id, safe='')}/tasks/{quote(task_id, safe='')}"


def _html(text: str) -> str:
    # Plain text (one Markdown-ish line per paragraph) as mail HTML; links stay clickable.
    escaped = html.escape(text)
    linked = re.sub(r"\[([^\]]+)\]\((https?://[^)\s]+)\)", r'<a href="\2">\1</a>', escaped)
    linked = re.sub(r"(?<![\"=])(https?://[^\s<]+)", r'<a href="\1">\1</a>', linked)
    return "<br>\n".join(linked.splitlines())


def _built(spec: Any, subject: str, text: str) -> Any:
    """One ``alerts.notifiers`` entry, holding this alert. Raises ``ImportError``, ``AttributeError``,
    ``TypeError`` (not an Airflow notifier, or arguments it does not take) naming the entry."""
    module, _, name = spec.notifier.rpartition(".")
    try:
        notifier = getattr(importlib.import_module(module), name)
        if not (isinstance(notifier, type) and issubclass(notifier, BaseNotifier)):
            # Only notifiers: a class path must not name any callable (os.system would run the text).
            raise TypeError("not a subclass of airflow.sdk.BaseNotifier")
        return notifier(**{**spec.kwargs, spec.message_arg: f"{subject}\n\n{text}"})
    except (ImportError, AttributeError, TypeError) as err:
        raise type(err)(f"alerts.notifiers: cannot build {spec.notifier}: {err}") from err


def channels(alerts: AlertsConfig, subject: str, text: str) -> list[Any]:
    """The configured notifiers, each holding this alert: ``SmtpNotifier`` for ``email_to``, then each of
    ``alerts.notifiers`` with ``subject`` and ``text`` in its ``message_arg``. A notifier that cannot be
    built is logged and left out: the other channels still get the alert."""
    built: list[Any] = []
    if alerts.email_to:
        from airflow.providers.smtp.notifications.smtp import SmtpNotifier

        built.append(
            SmtpNotifier(
                to=list(alerts.email_to),
                from_email=alerts.email_from,
                subject=subject,
                html_content=_html(text),
                smtp_conn_id=alerts.smtp_conn_id,
            )
        )
    for spec in alerts.notifiers:
        try:
            built.append(_built(spec, subject, text))
        except (ImportError, AttributeError, TypeError):
            log.exception("alerts: %r not sent through %s", subject, spec.notifier)
    return built


def send(alerts: AlertsConfig, subject: str, text: str, context: Any) -> int:
    """Deliver one alert on every configured channel; returns how many delivered. Failures are logged."""
    delivered = 0
    for notifier in channels(alerts, subject, text):
        try:
            # notify(), not __call__: the text is final, there is no template left to render.
            notifier.notify(context)
            delivered += 1
        except Exception:
            log.exception("alerts: %s could not deliver %r", type(notifier).__name__, subject)
    return delivered


def announce_change(run: Any, decision: dict, context: Any) -> int:
    """After a write made without asking (``approval: never``): the "segments changed" alert when
    ``on_change`` would have asked (``decide_approval``'s ``change_reasons``). Returns alerts delivered."""
    if decision.get("ask") or not decision.get("change_reasons"):
        return 0
    text = "Written without approval (approval: never).\n\n" + decision["body"]
    return send(run.config.alerts, f"Market segments of {run.month} changed", text, context)


def _month(context: Any) -> str:
    from include.segmentation.months import resolve_month

    dag_run = context.get("dag_run")
    try:
        target = (context.get("params") or {}).get("target_month") or None
        return str(resolve_month(target, context.get("logical_date"), getattr(dag_run, "run_after", None)).month)
    except (TypeError, ValueError):
        return "unknown month"


class RunFailedAlert(BaseNotifier):
    """``on_failure_callback`` of the DAG's tasks: "Segmentation 2013-12 failed at <task>", with the
    error, the run, a link to the task's log and to the run's report page."""

    def notify(self, context: Any) -> None:
        from include.segmentation.config import load_config

        config = load_config()
        ti, run_id = context["ti"], context["run_id"]
        month = _month(context)
        error = context.get("exception")
        subject = f"Market segmentation {month} failed at {ti.task_id}"
        text = "\n".join(
            [
                f"The {DAG_ID} run {run_id} for {month} failed at task {ti.task_id} "
                f"(try {getattr(ti, 'try_number', '?')}). Nothing of this run was written to the warehouse; "
                "the month's current segments are unchanged.",
                f"Error: {type(error).__name__}: {error}" if error else "Error: see the task log.",
                f"Task log: {task_log_url(config, run_id, ti.task_id)}",
                f"Report: {report_url(config, run_id)}",
            ]
        )
        send(config.alerts, subject, text, context)


class ApprovalRequestAlert(BaseNotifier):
    """Notifier of the approval task: the request's subject and body (rendered from ``decide_approval``)
    with a link to "Required actions" in the Airflow UI."""

    def notify(self, context: Any) -> None:
        from include.segmentation.config import load_config

        config = load_config()
        task = context["task"]
        where = f"{ui_url(config)}/dags/{DAG_ID}/runs/{quote(context['run_id'], safe='')}/required_actions"
        text = f"{task.body}\n\nAnswer in Airflow's Required actions: {where}"
        send(config.alerts, task.subject, text, context)
