"""``[core] hostname_callable`` for the distributed test: two Celery workers on one machine would
otherwise record the same hostname on their task instances, hiding which one ran a task."""

import os
import socket


def hostname() -> str:
    """``$WORKER_IDENTITY`` when set (one per worker process), else the machine's FQDN."""
    return os.environ.get("WORKER_IDENTITY") or socket.getfqdn()
