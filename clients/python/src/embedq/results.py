"""Results the client puts together itself (not answers of one request)."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["DeleteResult"]


@dataclass(frozen=True)
class DeleteResult:
    """What :meth:`Client.delete_items` did.

    Attributes:
        deleted: the ids embedq removed (records and vectors).
        missing: the ids embedq did not know (nothing to remove).
        jobs_finished: jobs that ended because their last open items were deleted.

    """

    deleted: tuple[str, ...]
    missing: tuple[str, ...]
    jobs_finished: int = 0
