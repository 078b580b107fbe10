"""For the asyncpg contenders (b) and (c): the SQL, and a row's JSON exactly as productos writes it."""

from __future__ import annotations

import json
import os
from typing import Any

COLUMNS = "id, nombre, descripcion, precio, stock, created_at, updated_at, version"
SELECT_ONE = f"SELECT {COLUMNS} FROM productos WHERE id = $1"
SELECT_PAGE = f"SELECT {COLUMNS} FROM productos WHERE id > $1 ORDER BY id LIMIT $2"
INSERT = (
    "INSERT INTO productos (nombre, descripcion, precio, stock, version, created_at, updated_at) "
    f"VALUES ($1, $2, $3, $4, 1, now(), now()) RETURNING {COLUMNS}"
)
# The pool's bounds per worker: bench.harness sets them to productos' pool (size, size + overflow) for every
# contender (BENCH_POOL_MIN connections opened at start, BENCH_POOL_MAX at most); these are the guide's 10 + 20.
POOL_MIN = int(os.environ.get("BENCH_POOL_MIN", "10"))
POOL_MAX = int(os.environ.get("BENCH_POOL_MAX", "30"))


def dsn() -> str:
    url = os.environ["DATABASE_URL"]
    return url.replace("postgresql+asyncpg://", "postgresql://", 1)


def row_dict(row: Any) -> dict[str, Any]:
    return {
        "id": row["id"],
        "nombre": row["nombre"],
        "descripcion": row["descripcion"],
        "precio": float(row["precio"]),
        "stock": row["stock"],
        "created_at": row["created_at"].isoformat(),
        "updated_at": row["updated_at"].isoformat(),
        "version": row["version"],
    }


def dump(value: Any) -> bytes:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":")).encode()
