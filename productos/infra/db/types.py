"""Column types that mean the same on every backend: UTC datetimes and exact money.

Off SQLite, each type's processors are single functions (or none at all), not ``TypeDecorator``'s wrapper around
``process_bind_param``/``process_result_value``: one Python call per value fewer, on every row of every result.
They still compose with the implementation type's own processors, as ``TypeDecorator``'s do.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import BigInteger, DateTime, Numeric
from sqlalchemy.engine import Dialect
from sqlalchemy.types import TypeDecorator, TypeEngine

__all__ = ["Money", "UtcDateTime"]

_Processor = Callable[[Any], Any]


class Money(TypeDecorator[Decimal]):
    """NUMERIC(10, 2) on PostgreSQL; integer cents on SQLite, which has no exact decimal type."""

    impl = Numeric(10, 2)
    cache_ok = True

    def load_dialect_impl(self, dialect: Dialect) -> TypeEngine[Any]:
        if dialect.name == "sqlite":
            return dialect.type_descriptor(BigInteger())
        return dialect.type_descriptor(Numeric(10, 2, asdecimal=True))

    def process_bind_param(self, value: Decimal | None, dialect: Dialect) -> Any:
        if value is None or dialect.name != "sqlite":
            return value
        return int(value.scaleb(2))

    def process_result_value(self, value: Any, dialect: Dialect) -> Decimal | None:
        if value is None:
            return None
        if dialect.name == "sqlite":
            return Decimal(value).scaleb(-2)
        return value  # type: ignore[no-any-return]

    # Off SQLite the value is the Decimal as it is both ways: only the implementation's processing remains.

    def bind_processor(self, dialect: Dialect) -> _Processor | None:
        if dialect.name == "sqlite":
            return super().bind_processor(dialect)
        return self.impl_instance.bind_processor(dialect)

    def result_processor(self, dialect: Dialect, coltype: Any) -> _Processor | None:
        if dialect.name == "sqlite":
            return super().result_processor(dialect, coltype)
        return self.impl_instance.result_processor(dialect, coltype)


class UtcDateTime(TypeDecorator[datetime]):
    """Timezone-aware UTC datetimes on every backend (SQLite keeps them naive, so UTC is put back)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> Any:
        value = _aware(value)
        if value is not None and dialect.name == "sqlite":
            return value.astimezone(UTC).replace(tzinfo=None)
        return value

    def process_result_value(self, value: Any, dialect: Dialect) -> datetime | None:
        return _as_utc(value)

    def bind_processor(self, dialect: Dialect) -> _Processor | None:
        if dialect.name == "sqlite" or self.impl_instance.bind_processor(dialect) is not None:
            return super().bind_processor(dialect)
        return _aware

    def result_processor(self, dialect: Dialect, coltype: Any) -> _Processor | None:
        if self.impl_instance.result_processor(dialect, coltype) is not None:
            return super().result_processor(dialect, coltype)
        return _as_utc


def _aware(value: datetime | None) -> datetime | None:
    if value is not None and value.tzinfo is None:
        raise ValueError("naive datetime: productos stores UTC-aware datetimes only")
    return value


def _as_utc(value: Any) -> datetime | None:
    if value is not None and value.tzinfo is None:
        return value.replace(tzinfo=UTC)  # type: ignore[no-any-return]
    return value  # type: ignore[no-any-return]
