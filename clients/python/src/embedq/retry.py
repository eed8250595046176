"""When and how long the client waits before sending a request again.

Only requests that are safe to repeat are retried: reads (dry runs included), and calls whose
effect is the same however often they arrive (upserts, cancel, pause, resume, deletes), plus
the creation of a job when it carries an idempotency key. They are retried on an
:class:`~embedq.errors.UnavailableError` (503: the daemon changed nothing) and on connection
errors, with exponential backoff and full jitter: before retry ``n`` (0-based) the client
sleeps a random time between 0 and ``min(max_delay, base_delay * 2**n)``, or the server's
``Retry-After`` when that is longer.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field

from .errors import EmbedqConnectionError, EmbedqError, UnavailableError

__all__ = ["RetryPolicy"]


@dataclass(frozen=True)
class RetryPolicy:
    """Retries of safe requests.

    Attributes:
        max_retries: retries after the first attempt (0 turns retries off).
        base_delay: seconds; the cap of the first backoff, doubled for each retry.
        max_delay: seconds; the largest cap.

    """

    max_retries: int = 3
    base_delay: float = 0.2
    max_delay: float = 5.0
    _random: random.Random = field(default_factory=random.Random, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.max_retries < 0:
            raise ValueError("max_retries must not be negative")
        if self.base_delay < 0 or self.max_delay < 0:
            raise ValueError("delays must not be negative")

    @staticmethod
    def is_retryable(error: EmbedqError) -> bool:
        """Whether an error may go away by itself (503 and its kin, or no connection)."""
        return isinstance(error, (UnavailableError, EmbedqConnectionError))

    def delay(self, retry: int, error: EmbedqError | None = None) -> float:
        """Seconds to sleep before retry number ``retry`` (0-based): full jitter under the
        exponential cap, or the server's ``Retry-After`` when that is longer.
        """
        cap = min(self.max_delay, self.base_delay * (2.0**retry))
        wait = self._random.uniform(0.0, cap)
        asked = error.retry_after if isinstance(error, UnavailableError) else None
        if asked is not None and asked > wait:
            return min(asked, max(self.max_delay, cap))
        return wait

    def should_retry(self, safe: bool, retry: int, error: EmbedqError) -> bool:
        """Whether a request that failed with ``error`` gets retry number ``retry``."""
        return safe and retry < self.max_retries and self.is_retryable(error)


#: No retries at all.
NO_RETRIES = RetryPolicy(max_retries=0)
