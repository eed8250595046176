"""The ContextItem table (SQLAlchemy 2, async, psycopg 3) and its queries."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from sqlalchemy import DateTime, String, Text, delete, func, select
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import (
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column


class Base(DeclarativeBase):
    pass


class ContextItem(Base):
    """A text item of a context: the rows embedq keeps embeddings of (the same ids)."""

    __tablename__ = "context_items"

    id: Mapped[str] = mapped_column(String(128), primary_key=True)
    context_id: Mapped[str] = mapped_column(String(128), index=True)
    content: Mapped[str] = mapped_column(Text)
    updated_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), server_default=func.now(), onupdate=func.now()
    )


def make_engine(url: str) -> AsyncEngine:
    return create_async_engine(url, pool_size=5, max_overflow=5, pool_pre_ping=True)


def make_sessions(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    return async_sessionmaker(engine, expire_on_commit=False)


async def create_tables(engine: AsyncEngine) -> None:
    """Creates the table if it is missing (a real backend runs its migrations instead)."""
    async with engine.begin() as conn:
        await conn.run_sync(Base.metadata.create_all)


async def save_items(
    session: AsyncSession, context_id: str, items: Sequence[tuple[str, str]]
) -> None:
    """Inserts or updates ``(id, content)`` rows of a context (not committed)."""
    statement = insert(ContextItem).values(
        [
            {"id": item_id, "context_id": context_id, "content": content}
            for item_id, content in items
        ]
    )
    statement = statement.on_conflict_do_update(
        index_elements=[ContextItem.id],
        set_={
            "context_id": statement.excluded.context_id,
            "content": statement.excluded.content,
            "updated_at": func.now(),
        },
    )
    await session.execute(statement)


async def delete_item(session: AsyncSession, context_id: str, item_id: str) -> bool:
    """Deletes one row (not committed); whether it existed."""
    result = await session.execute(
        delete(ContextItem)
        .where(ContextItem.id == item_id, ContextItem.context_id == context_id)
        .returning(ContextItem.id)
    )
    return result.first() is not None


async def contents(session: AsyncSession, context_id: str, ids: Sequence[str]) -> dict[str, str]:
    """The content of those rows of a context that exist, by id."""
    if not ids:
        return {}
    rows = await session.execute(
        select(ContextItem.id, ContextItem.content).where(
            ContextItem.context_id == context_id, ContextItem.id.in_(ids)
        )
    )
    return {row.id: row.content for row in rows}
