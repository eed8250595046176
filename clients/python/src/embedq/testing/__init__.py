"""Helpers for tests that run against a real embedq daemon: :class:`Daemon` starts
``embedq serve`` on a free port with its own SQLite file, vector directory and Redis key
prefix (all removed when it stops), and :class:`MockProvider` is an OpenAI-compatible
embeddings server with deterministic vectors.

::

    with MockProvider() as mock, Daemon(mock_provider_env(mock)) as daemon:
        with Client(daemon.url) as client:
            ...

The binary comes from ``$EMBEDQ_BIN`` (see :func:`find_binary`). Standard library and httpx
only.
"""

from .daemon import (
    DEFAULT_BINARY,
    Daemon,
    default_binary,
    find_binary,
    free_port,
    local_model_env,
    mock_provider_env,
)
from .mock_provider import MockProvider, vector_for

__all__ = [
    "DEFAULT_BINARY",
    "Daemon",
    "MockProvider",
    "default_binary",
    "find_binary",
    "free_port",
    "local_model_env",
    "mock_provider_env",
    "vector_for",
]
