"""What both clients do around one HTTP exchange: the request's arguments, the mapping of
httpx's exceptions to :class:`~embedq.errors.EmbedqConnectionError`, and the progress key of
``wait_for_job``.
"""

from __future__ import annotations

from typing import Any

import httpx

from ._config import Settings
from ._operations import Call
from .errors import EmbedqConnectionError, RequestTimeoutError
from .models import JobAccepted, JobView

#: httpx errors that may go away by themselves: no connection, a reset, a timeout, a
#: connection closed mid-answer. Others (a malformed URL, say) are raised at once.
TRANSIENT_TRANSPORT_ERRORS: tuple[type[httpx.TransportError], ...] = (
    httpx.NetworkError,
    httpx.TimeoutException,
    httpx.RemoteProtocolError,
    httpx.ProxyError,
)


def request_arguments(settings: Settings, call: Call[Any]) -> dict[str, Any]:
    """Keyword arguments of ``httpx.Client.request`` for a call."""
    headers = settings.headers()
    if call.headers:
        headers.update(call.headers)
    arguments: dict[str, Any] = {
        "method": call.method,
        "url": settings.base_url + call.path,
        "headers": headers,
        "timeout": settings.timeout,
    }
    if call.body is not None:
        arguments["json"] = call.body
    elif call.content is not None:
        arguments["content"] = call.content  # its Content-Type is among the call's headers
    if call.params:
        arguments["params"] = dict(call.params)
    return arguments


def connection_error(error: httpx.TransportError, method: str, url: str) -> EmbedqConnectionError:
    """The client's exception for an httpx transport error."""
    cls = (
        RequestTimeoutError if isinstance(error, httpx.TimeoutException) else EmbedqConnectionError
    )
    detail = str(error) or type(error).__name__
    return cls(f"{method} {url}: {detail}", method=method, url=url)


def is_transient(error: httpx.TransportError) -> bool:
    """Whether retrying may help."""
    return isinstance(error, TRANSIENT_TRANSPORT_ERRORS)


def job_id_of(job: str | JobAccepted | JobView) -> str:
    """A job's id from the id itself or from an answer that names the job."""
    if isinstance(job, JobAccepted):
        return job.job_id
    if isinstance(job, JobView):
        return job.id
    return job


def progress_key(job: JobView) -> tuple[Any, ...]:
    """What ``on_progress`` reports a change of."""
    return (
        job.state,
        job.planned,
        job.total,
        job.completed,
        job.failed,
        job.skipped,
        job.deleted,
    )


def check_wait(timeout: float, poll_interval: float) -> None:
    """Refuses a negative timeout or a non-positive poll interval."""
    if timeout < 0:
        raise ValueError("timeout must not be negative")
    if poll_interval <= 0:
        raise ValueError("poll_interval must be positive")
