"""The backend's request and answer bodies."""

from __future__ import annotations

from pydantic import BaseModel, Field, field_validator

from embedq import JobView


class NewItem(BaseModel):
    id: str = Field(min_length=1, max_length=128, pattern=r"^[A-Za-z0-9._:-]+$")
    content: str = Field(min_length=1, max_length=65536)


class SaveRequest(BaseModel):
    items: list[NewItem] = Field(min_length=1, max_length=10_000)

    @field_validator("items")
    @classmethod
    def ids_are_unique(cls, items: list[NewItem]) -> list[NewItem]:
        seen: set[str] = set()
        for item in items:
            if item.id in seen:
                raise ValueError(f"item id {item.id!r} is given twice")
            seen.add(item.id)
        return items


class SaveAnswer(BaseModel):
    saved: int
    created: int
    changed: int
    unchanged: int
    #: The job embedding the saved items (null when nothing changed, or when embedq could
    #: not take a job just now: the next bulk regeneration embeds them).
    job_id: str | None


class DeleteAnswer(BaseModel):
    deleted: str
    #: False when embedq did not hold the item (nothing to remove there).
    removed_from_embedq: bool


class SearchHit(BaseModel):
    id: str
    score: float
    content: str


class SearchResults(BaseModel):
    context_id: str
    query: str
    hits: list[SearchHit]


class RegenerateRequest(BaseModel):
    #: The context to regenerate; every item when left out.
    context_id: str | None = None


class RegenerateAccepted(BaseModel):
    job_id: str
    state: str
    #: Poll this route (or call it with ?wait=SECONDS) for progress.
    status_url: str
    #: False when an Idempotency-Key matched an earlier request's job.
    created: bool


class JobStatus(BaseModel):
    job_id: str
    state: str
    #: True once the job is COMPLETED, FAILED or CANCELLED.
    finished: bool
    total: int
    done: int
    completed: int
    failed: int
    skipped: int
    #: done / total, or null while the total is still being counted.
    progress: float | None

    @classmethod
    def of(cls, job: JobView) -> JobStatus:
        return cls(
            job_id=job.id,
            state=job.state,
            finished=job.is_final,
            total=job.total,
            done=job.done,
            completed=job.completed,
            failed=job.failed,
            skipped=job.skipped,
            progress=job.progress,
        )
