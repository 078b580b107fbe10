"""productos on SQLAlchemy's own ``AsyncAdaptedQueuePool`` instead of ``FairAsyncQueuePool``, its pool before the
fair wait (``productos.infra.db.pool``): the before of a before/after, with no productos code edited.

``python -m bench.pool_sizing --stock-pool`` runs it beside productos; or
``python -m bench.run --contenders ac --variant stock:APP=bench.contenders.productos_stock_pool:app``.
"""

from __future__ import annotations

from sqlalchemy.pool import AsyncAdaptedQueuePool

from productos.infra.db import engine as _engine

# create_engine passes this module-level name as the poolclass of every PostgreSQL engine.
_engine.FairAsyncQueuePool = AsyncAdaptedQueuePool  # type: ignore[misc]

from productos.main import app  # noqa: E402 - after the pool class is swapped

__all__ = ["app"]
