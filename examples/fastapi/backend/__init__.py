"""An example web backend: ContextItem rows in PostgreSQL, kept in sync with embedq.

Run it with ``uvicorn backend.main:app`` (``DATABASE_URL``, ``EMBEDQ_URL`` and
``EMBEDQ_ADMIN_TOKEN`` from the environment); see README.md for the routes.
"""
