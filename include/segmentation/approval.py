"""The approval gate: Airflow's ``ApprovalOperator`` (human in the loop), asked only when the month needs it.

``SegmentApprovalOperator`` reads the decision of ``decide_approval`` (``core.gate``): when no approval
is needed it approves at once and the write follows; otherwise it writes the request (subject, Markdown
body with the month, k before and after, stability, the biggest moves and the report link) to Airflow's
"Required actions" and waits there. On Airflow 3.3+ a waiting task is parked in ``awaiting_input``:
no worker slot, no triggerer; earlier 3.x versions defer it to the triggerer. Approve: the downstream
``write_segments`` runs. Reject (or the timeout's default): it is skipped, nothing is written and the
previous month's segments stay current.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from airflow.providers.standard.operators.hitl import ApprovalOperator

from include.segmentation.alerts import ApprovalRequestAlert
from include.segmentation.config import ApprovalConfig


class SegmentApprovalOperator(ApprovalOperator):
    """``ApprovalOperator`` that asks only when ``decision_task_id``'s result says ``ask``.

    Its result is the operator's (``chosen_options``, ...) with ``asked``: False when it approved
    without asking.
    """

    def __init__(self, *, decision_task_id: str, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.decision_task_id = decision_task_id

    def execute(self, context: Any) -> Any:
        decision = context["ti"].xcom_pull(task_ids=self.decision_task_id) or {}
        if not decision.get("ask"):
            self.log.info("no approval needed (%s): writing", "; ".join(decision.get("reasons") or []) or "no change")
            return {"chosen_options": [self.APPROVE], "params_input": {}, "asked": False}
        self.log.info("asking for approval: %s", "; ".join(decision["reasons"]))
        return super().execute(context)

    def execute_complete(self, context: Any, event: dict[str, Any]) -> Any:
        result = super().execute_complete(context, event)
        return {**dict(result), "asked": True}


def approval_task(config: ApprovalConfig, decision_task_id: str = "decide_approval") -> SegmentApprovalOperator:
    """The DAG's ``approve_segments`` task: the request's subject and body rendered from
    ``decision_task_id``'s result, ``config.on_timeout`` decided after ``config.timeout_hours``, the
    request sent to the alert channels, and no retry (a person's answer is not retried)."""
    decision = f"ti.xcom_pull(task_ids='{decision_task_id}')"
    on_timeout = SegmentApprovalOperator.REJECT if config.on_timeout == "reject" else SegmentApprovalOperator.APPROVE
    return SegmentApprovalOperator(
        task_id="approve_segments",
        decision_task_id=decision_task_id,
        subject="{{ " + decision + "['subject'] }}",
        body="{{ " + decision + "['body'] }}",
        defaults=on_timeout,
        response_timeout=timedelta(hours=config.timeout_hours),
        notifiers=[ApprovalRequestAlert()],
        retries=0,
    )
