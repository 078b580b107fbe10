"""The services productos is measured against. Each serves the ``productos`` table with productos' JSON shape.

- ``raw_asgi``: (b) a bare ASGI callable on an asyncpg pool, the physical limit of this stack.
- ``fastapi_asyncpg``: (c) FastAPI on a raw asyncpg pool, no ORM: the limit for any FastAPI service.
- ``fastapi_orm``: (d) a typical FastAPI + SQLAlchemy asyncio ORM service with pydantic response models.
- ``original``: (e) the original products app's shape: sync SQLAlchemy sessions (psycopg2) inside
  ``async def`` endpoints, no pagination.

Every contender reads ``DATABASE_URL`` (a ``postgresql://`` URL) and runs under
``gunicorn -k uvicorn_worker.UvicornWorker``.
"""
