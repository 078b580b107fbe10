"""SQLAlchemy Core statements, declared once, run at raw asyncpg speed on PostgreSQL and through SQLAlchemy elsewhere.

A repository writes its statements with SQLAlchemy Core, once (at module level, or from a cached builder), with
``bindparam()`` for the values, and runs them on a ``SqlConnection``::

    _GET = select(t.c.id, t.c.nombre).where(t.c.id == bindparam("id"))

    row = await connection.fetch_one(_GET, {"id": pedido_id})
    row.id, row[1]

On PostgreSQL through asyncpg (``DriverSqlConnection``) a statement is compiled once per shape into asyncpg's SQL
(``$1`` parameters), with where each parameter comes from, its type's bind processor and the result columns'
processors worked out beforehand; each call then builds the argument list and runs on the pooled asyncpg
connection (``DriverConnection``: timed for the statement listeners, errors translated, a broken connection
invalidated). SQLAlchemy Core's own execution costs about 250 µs of CPU per query (``bench/README.md``); this
path costs a few µs over asyncpg's (``bench/statements.py``). Elsewhere (the embedded SQLite default)
``SqlAlchemySqlConnection`` runs the same statements with ``AsyncConnection.execute``.

Caches (``StatementCache``, one per dialect):

- by statement object: what a call needs, with the object's own literal values resolved and processed once.
  An entry goes when its statement is garbage-collected (a weak reference), so statements built anew on every
  call do not pile up; the cache is bounded besides (the oldest entry goes first).
- by shape (SQLAlchemy's cache key, plus the parameter names for INSERT and UPDATE, which add columns): the
  compiled statement, bounded, least recently used first. A statement built anew on every call misses the
  first cache and pays SQLAlchemy's cache-key generation, then runs the same way.

What works as SQLAlchemy does: literal values in a statement (``t.c.id == 5``, ``.values(version=1)``), values
given to ``bindparam()``, ``bindparam(callable_=...)``, Python-side column defaults and ``onupdate`` (scalars and
callables, context-sensitive ones included), ``expanding`` and ``literal_execute`` parameters (re-rendered on
each call, as SQLAlchemy does), type decorators both ways, rows by attribute and by position.

Limits on the asyncpg path: one parameter set per call (no executemany); statement execution options
(``yield_per``...) are ignored; an engine with a ``schema_translate_map`` takes the SQLAlchemy path; result
processors that depend on the column's type code get the one the column's SQLAlchemy type implies (NUMERIC for
``Numeric``, FLOAT8 for ``Float``), not the server's; a column default that is a SQL expression or a sequence
is rendered into the SQL by SQLAlchemy's compiler, and one that must be pre-executed is refused.
"""

from __future__ import annotations

import contextlib
import sys
import weakref
from collections import Counter, OrderedDict
from collections.abc import Awaitable, Callable, Iterator, Mapping, Sequence
from operator import itemgetter
from time import perf_counter_ns
from types import TracebackType
from typing import TYPE_CHECKING, Any, Final, Protocol, Self, TypeVar

from sqlalchemy.engine import Dialect
from sqlalchemy.exc import InvalidRequestError, ResourceClosedError, StatementError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine
from sqlalchemy.schema import Column
from sqlalchemy.sql import ClauseElement
from sqlalchemy.sql.base import Executable
from sqlalchemy.sql.compiler import SQLCompiler
from sqlalchemy.sql.dml import ValuesBase
from sqlalchemy.sql.elements import BindParameter
from sqlalchemy.sql.expression import CacheKey
from sqlalchemy.types import Float, Numeric, TypeDecorator, TypeEngine

from productos.domain.errors import ConcurrentUpdateError, DatabaseUnavailableError, ProductosError
from productos.infra.db.driver import DriverConnection, DriverUnitOfWorkBase
from productos.infra.db.engine import engine_traits
from productos.infra.db.replica import ReadReplica, note_write
from productos.infra.db.uow import SqlAlchemyUnitOfWorkBase, UnitOfWorkBase, error_sqlstate, translate_db_errors

__all__ = [
    "DriverSqlConnection",
    "SqlAlchemySqlConnection",
    "SqlConnection",
    "SqlRow",
    "SqlUnitOfWork",
    "StatementCache",
    "statement_cache",
]

Params = Mapping[str, Any]
_Processor = Callable[[Any], Any]

_NO_PARAMS: Final[Mapping[str, Any]] = {}
_MISSING: Final = object()

#: Type codes (PostgreSQL OIDs) of NUMERIC and FLOAT8, for result processors that ask (asyncpg's numerics).
_NUMERIC_OID: Final = 1700
_FLOAT8_OID: Final = 701


class SqlRow(Protocol):
    """A result row: its columns by attribute (``row.id``) and by position (``row[0]``)."""

    @property
    def _fields(self) -> tuple[str, ...]: ...

    def _asdict(self) -> dict[str, Any]: ...

    def __getattr__(self, name: str) -> Any: ...

    def __getitem__(self, index: int) -> Any: ...

    def __len__(self) -> int: ...

    def __iter__(self) -> Iterator[Any]: ...


class SqlConnection(Protocol):
    """What a repository runs its statements on; the same on every backend.

    ``params`` gives the values of the statement's ``bindparam()``s by name (and, for INSERT and UPDATE, of
    columns by key, as ``Connection.execute`` takes them). Integrity violations raise ``ConflictError``, an
    unreachable or failing database ``DatabaseUnavailableError``; a value a type refuses (a naive datetime)
    raises SQLAlchemy's ``StatementError``.
    """

    async def fetch_one(self, statement: Executable, params: Params | None = None) -> SqlRow | None:
        """The first row of the result, or ``None``."""
        ...

    async def fetch_all(self, statement: Executable, params: Params | None = None) -> Sequence[SqlRow]:
        """Every row of the result."""
        ...

    async def fetch_value(self, statement: Executable, params: Params | None = None) -> Any:
        """The first column of the first row, or ``None`` when there is no row."""
        ...

    async def execute(self, statement: Executable, params: Params | None = None) -> int:
        """Run ``statement`` for its effect: the number of rows it inserted, updated, deleted or returned."""
        ...


# --- rows ------------------------------------------------------------------------------------------------------


class _Row(tuple[Any, ...]):
    """Rows of the asyncpg path: tuples whose class, made per result shape, names the columns."""

    __slots__ = ()

    _fields: tuple[str, ...] = ()

    def _asdict(self) -> dict[str, Any]:
        return dict(zip(self._fields, self, strict=True))

    if TYPE_CHECKING:
        # Columns are properties of each row class; this tells mypy that rows have them.
        def __getattr__(self, name: str) -> Any: ...

    @property
    def _mapping(self) -> dict[str, Any]:
        return self._asdict()


def _ambiguous(name: str) -> property:
    def refuse(_row: _Row) -> Any:
        raise InvalidRequestError(f"Ambiguous column name {name!r} in result set column descriptions")

    return property(refuse)


def _row_type(names: Sequence[str]) -> type[_Row]:
    namespace: dict[str, Any] = {"__slots__": (), "_fields": tuple(names)}
    counts = Counter(names)
    for index, name in enumerate(names):
        # As on SQLAlchemy's rows, the tuple's own methods (count, index) win over columns of those names.
        if hasattr(_Row, name):
            continue
        # itemgetter in a property: a C call per access, as fast as a namedtuple's fields.
        namespace[name] = property(itemgetter(index)) if counts[name] == 1 else _ambiguous(name)
    return type("Row", (_Row,), namespace)


# --- SQLAlchemy's private APIs: here only ----------------------------------------------------------------------


def _shape(statement: ClauseElement) -> tuple[CacheKey | None, Mapping[str, Any] | None]:
    """The statement's cache key (``None`` when SQLAlchemy cannot cache it) and its ``.params()`` values.

    Private: ``_generate_cache_key()`` is what ``Connection.execute`` calls for its compiled cache; no public
    API gives a statement's shape. ``CacheKey.params`` is 2.1's; 2.0 keeps ``.params()`` in the bind values.
    """
    key = statement._generate_cache_key()
    if key is not None:
        return key, getattr(key, "params", None)
    return None, getattr(statement, "_params", None)


def _result_columns(compiled: SQLCompiler) -> list[tuple[str, TypeEngine[Any]]]:
    """The result columns' keys and types, in the order of the row.

    Private: ``_result_columns`` is what SQLAlchemy's ``CursorResult`` maps rows with; the public
    ``exported_columns`` names some columns otherwise (``count`` where rows say ``count_1``).
    """
    return [(entry.keyname, entry.type) for entry in compiled._result_columns]


# --- compiled shapes -------------------------------------------------------------------------------------------


def _bind_processor(type_: TypeEngine[Any], dialect: Dialect) -> _Processor | None:
    return type_.dialect_impl(dialect).bind_processor(dialect)


def _result_processor(type_: TypeEngine[Any], dialect: Dialect) -> _Processor | None:
    impl = type_.dialect_impl(dialect)
    inner: TypeEngine[Any] = impl
    while isinstance(inner, TypeDecorator):
        inner = inner.impl_instance
    # The server's type code is known only once a statement ran; asyncpg's numerics need one.
    coltype = _FLOAT8_OID if isinstance(inner, Float) else _NUMERIC_OID if isinstance(inner, Numeric) else None
    return impl.result_processor(dialect, coltype)


class _DefaultContext:
    """What a context-sensitive column default gets in place of SQLAlchemy's execution context."""

    __slots__ = ("_bound", "_params", "current_column")

    def __init__(self, bound: _Bound, params: Params, column: Column[Any]) -> None:
        self._bound = bound
        self._params = params
        self.current_column = column

    @property
    def current_parameters(self) -> dict[str, Any]:
        return self._bound.raw_values(self._params, defaults=False)

    def get_current_parameters(self, isolate_multiinsert_groups: bool = True) -> dict[str, Any]:
        return self.current_parameters


class _Late:
    """A value known only when the statement runs: a required parameter, a callable, a column default."""

    __slots__ = ("column", "function", "key")

    def __init__(self, key: str, function: Callable[..., Any] | None = None, column: Column[Any] | None = None):
        self.key = key
        self.function = function
        self.column = column

    def resolve(self, bound: _Bound, params: Params) -> Any:
        if self.column is not None:
            assert self.function is not None
            return self.function(_DefaultContext(bound, params, self.column))
        if self.function is not None:
            return self.function()
        raise InvalidRequestError(f"A value is required for bind parameter {self.key!r}", code="cd3x")


class _Plan:
    """One statement shape compiled for asyncpg: its SQL, its parameters in ``$n`` order, how rows map."""

    __slots__ = (
        "cache_key",
        "compiled",
        "defaults",
        "first_processor",
        "names",
        "positions",
        "postcompile",
        "processors",
        "result_processors",
        "returns_rows",
        "row_type",
        "sql",
    )

    def __init__(self, compiled: SQLCompiler, cache_key: CacheKey | None, dialect: Dialect) -> None:
        self.compiled = compiled
        #: The cache key of the statement compiled (``None``: SQLAlchemy cannot cache it).
        self.cache_key = cache_key
        self.sql: str = compiled.string
        binds = {name: bind for bind, name in compiled.bind_names.items()}
        self.processors = {
            name: processor
            for name, bind in binds.items()
            if (processor := _bind_processor(bind.type, dialect)) is not None
        }
        #: Per ``$n``: the compiled name, the key ``params`` gives it under (and another it may come under).
        self.positions: tuple[tuple[str, str, str | None, _Processor | None], ...] = tuple(
            (name, *_lookup_keys(binds[name], name), self.processors.get(name)) for name in compiled.positiontup or ()
        )
        self.defaults = _prefetched_defaults(compiled, binds)
        # Expanding IN and literal_execute parameters change the SQL text with each call's values.
        self.postcompile = bool(compiled.post_compile_params or compiled.literal_execute_params)
        if compiled.isinsert or compiled.isupdate or compiled.isdelete:
            # Implicit RETURNING (the new primary key) is SQLAlchemy's business: the statement returns no rows.
            self.returns_rows = bool(compiled.effective_returning) and not compiled.implicit_returning
        else:
            self.returns_rows = True
        columns = _result_columns(compiled)
        self.names: tuple[str, ...] | None = tuple(name for name, _ in columns) if columns else None
        self.row_type: type[_Row] | None = _row_type(self.names) if self.names else None
        processors = [_result_processor(type_, dialect) for _, type_ in columns]
        self.result_processors = tuple((index, p) for index, p in enumerate(processors) if p is not None)
        self.first_processor = processors[0] if processors else None

    def row(self, record: Any) -> SqlRow:
        row_type = self.row_type
        if row_type is None:
            # text(): the driver's column names, and no types to process with (as SQLAlchemy does).
            row_type = self.row_type = _row_type(tuple(record.keys()))
        if not self.result_processors:
            row: SqlRow = tuple.__new__(row_type, record)
            return row
        values = list(record)
        for index, process in self.result_processors:
            values[index] = process(values[index])
        row = tuple.__new__(row_type, values)
        return row


def _lookup_keys(bind: BindParameter[Any], name: str) -> tuple[str, str | None]:
    """Where ``params`` has a parameter's value: under its key, else under its compiled name, as
    ``construct_params`` looks. A literal's key is anonymous (``%(4349 id)s``): its name (``id_1``) only."""
    key = bind.key
    if key.startswith("%("):
        return name, None
    return key, (name if name != key else None)


def _prefetched_defaults(compiled: SQLCompiler, binds: Mapping[str, BindParameter[Any]]) -> dict[str, _Late | Any]:
    """Python-side defaults (``default=``, ``onupdate=``) of the columns this INSERT or UPDATE leaves out."""
    defaults: dict[str, _Late | Any] = {}
    for prefetch, attribute in ((compiled.insert_prefetch, "default"), (compiled.update_prefetch, "onupdate")):
        for column in prefetch:
            default = getattr(column, attribute)
            # SQLAlchemy names a prefetched column's parameter after the column's key on a single table.
            if column.key not in binds or default is None or not (default.is_scalar or default.is_callable):
                raise InvalidRequestError(
                    f"column {column!r}: only scalar and callable Python defaults are supported on this path"
                )
            defaults[column.key] = _Late(column.key, default.arg, column) if default.is_callable else default.arg
    return defaults


# --- one statement object's values -----------------------------------------------------------------------------


class _Bound:
    """A plan, with the values one statement object holds itself (literals, ``.params()``, defaults) resolved
    and, when they are constants, already processed for the driver."""

    __slots__ = ("plan", "raw", "slots", "sql")

    def __init__(self, plan: _Plan, key: CacheKey | None, statement_params: Mapping[str, Any] | None) -> None:
        self.plan = plan
        self.sql = plan.sql
        compiled = plan.compiled
        # Another statement of the same shape has its own values: its cache key lists its bind parameters in the
        # order of the compiled statement's, whose keys the compiled binds keep (as construct_params pairs them).
        own: dict[str, BindParameter[Any]] = {}
        if key is not None and plan.cache_key is not None:
            own = {mine.key: theirs for mine, theirs in zip(plan.cache_key.bindparams, key.bindparams, strict=True)}
        raw: dict[str, Any] = {}
        for bind, name in compiled.bind_names.items():
            source = own.get(bind.key, bind)
            if statement_params and (bind.key in statement_params or name in statement_params):
                raw[name] = statement_params[bind.key if bind.key in statement_params else name]
            elif name in plan.defaults:
                raw[name] = plan.defaults[name]
            elif source.callable is not None:
                raw[name] = _Late(bind.key, source.callable)
            elif source.required:
                raw[name] = _Late(bind.key)
            else:
                raw[name] = source.value
        self.raw = raw
        slots = []
        try:
            for name, primary, alternative, process in plan.positions:
                value = raw[name]
                if process is not None and type(value) is not _Late:
                    value = process(value)  # a constant: processed once, here
                slots.append((primary, alternative, process, value))
        except Exception as exc:
            raise _statement_error(exc, self.sql) from exc
        self.slots = tuple(slots)

    def render(self, params: Params) -> tuple[str, list[Any]]:
        """The SQL and the driver's arguments for a call with ``params``."""
        if self.plan.postcompile:
            return self._render_expanded(params)
        args: list[Any] = []
        append = args.append
        get = params.get
        missing = _MISSING
        try:
            for primary, alternative, process, fixed in self.slots:
                value = get(primary, missing)
                if value is missing and alternative is not None:
                    value = get(alternative, missing)
                if value is missing:
                    if type(fixed) is not _Late:
                        append(fixed)
                        continue
                    value = fixed.resolve(self, params)
                append(value if process is None else process(value))
        except Exception as exc:
            raise _statement_error(exc, self.sql) from exc
        return self.sql, args

    def raw_values(self, params: Params, *, defaults: bool = True) -> dict[str, Any]:
        """Every parameter's value for a call, by compiled name, before bind processing."""
        values: dict[str, Any] = {}
        for bind, name in self.plan.compiled.bind_names.items():
            primary, alternative = _lookup_keys(bind, name)
            if primary in params:
                values[name] = params[primary]
            elif alternative is not None and alternative in params:
                values[name] = params[alternative]
            else:
                value = self.raw[name]
                if type(value) is _Late:
                    if not defaults and value.column is not None:
                        continue
                    value = value.resolve(self, params)
                values[name] = value
        return values

    def _render_expanded(self, params: Params) -> tuple[str, list[Any]]:
        try:
            state = self.plan.compiled.construct_expanded_state(self.raw_values(params), escape_names=False)
            processors = {**self.plan.processors, **state.processors}
            values = state.parameters
            args = [
                value if (process := processors.get(name)) is None else process(value)
                for name in state.positiontup or ()
                for value in (values[name],)
            ]
        except Exception as exc:
            raise _statement_error(exc, self.sql) from exc
        return state.statement, args


def _statement_error(exc: Exception, sql: str) -> StatementError:
    """What SQLAlchemy raises when a statement's parameters cannot be made (a type refusing a value)."""
    return StatementError(f"({type(exc).__module__}.{type(exc).__name__}) {exc}", sql, None, exc)


# --- the caches ------------------------------------------------------------------------------------------------


class _Entry:
    __slots__ = ("bound", "ref", "variants")

    def __init__(self, ref: weakref.ref[Any], bound: _Bound | None) -> None:
        self.ref = ref
        self.bound = bound
        #: INSERT and UPDATE: one per set of parameter names (they can add columns to the statement).
        self.variants: dict[tuple[str, ...], _Bound] | None = None if bound is not None else {}


class StatementCache:
    """Compiled statements for one dialect (``statement_cache(engine)`` gives an engine's).

    Args:
        dialect: the engine's dialect (asyncpg's: ``$n`` parameters).
        max_statements: statement objects remembered (each entry also goes when its statement is collected).
        max_shapes: compiled shapes remembered, least recently used first out.
        max_variants: per INSERT or UPDATE object, sets of parameter names remembered.
    """

    def __init__(
        self, dialect: Dialect, *, max_statements: int = 1000, max_shapes: int = 500, max_variants: int = 16
    ) -> None:
        if min(max_statements, max_shapes, max_variants) < 1:
            raise ValueError("cache sizes must be at least 1")
        self.dialect = dialect
        self.max_statements = max_statements
        self.max_shapes = max_shapes
        self.max_variants = max_variants
        #: Statements compiled so far (a miss in both caches).
        self.compilations = 0
        self._entries: dict[int, _Entry] = {}
        self._shapes: OrderedDict[tuple[Any, ...], _Plan] = OrderedDict()

    def __len__(self) -> int:
        """Statement objects remembered."""
        return len(self._entries)

    @property
    def shapes(self) -> int:
        """Compiled shapes remembered."""
        return len(self._shapes)

    def sql(self, statement: Executable, params: Params | None = None) -> str:
        """The SQL ``statement`` runs as, with ``params``' names (expanding parameters not yet expanded)."""
        return self._bound(statement, _NO_PARAMS if params is None else params).sql

    def _bound(self, statement: Executable, params: Params) -> _Bound:
        entry = self._entries.get(id(statement))
        if entry is not None and entry.ref() is statement:
            if entry.bound is not None:
                return entry.bound
            assert entry.variants is not None
            bound = entry.variants.get(tuple(params))
            if bound is not None:
                return bound
        return self._miss(statement, params, entry)

    def _miss(self, statement: Executable, params: Params, entry: _Entry | None) -> _Bound:
        if not isinstance(statement, ClauseElement):
            raise TypeError(f"not a SQLAlchemy statement: {statement!r}")
        key, statement_params = _shape(statement)
        # Parameters named after columns add them to an INSERT or UPDATE, as Connection.execute does.
        dml = isinstance(statement, ValuesBase)
        names = tuple(sorted(params)) if dml else ()
        plan = self._plan(statement, key, names)
        bound = _Bound(plan, key, statement_params)
        if entry is not None and entry.ref() is statement:
            assert entry.variants is not None
            _put(entry.variants, tuple(params), bound, self.max_variants)
        else:
            self._remember(statement, bound, dml, params)
        return bound

    def _plan(self, statement: ClauseElement, key: CacheKey | None, names: tuple[str, ...]) -> _Plan:
        shape = (key.key, names) if key is not None else None
        if shape is not None and (plan := self._shapes.get(shape)) is not None:
            self._shapes.move_to_end(shape)
            return plan
        compiled = statement.compile(dialect=self.dialect, column_keys=list(names))
        assert isinstance(compiled, SQLCompiler)
        self.compilations += 1
        plan = _Plan(compiled, key, self.dialect)
        if shape is not None:
            self._shapes[shape] = plan
            if len(self._shapes) > self.max_shapes:
                self._shapes.popitem(last=False)
        return plan

    def _remember(self, statement: ClauseElement, bound: _Bound, dml: bool, params: Params) -> None:
        entries = self._entries
        key = id(statement)

        def forget(ref: weakref.ref[Any]) -> None:
            current = entries.get(key)
            if current is not None and current.ref is ref:
                del entries[key]

        try:
            ref = weakref.ref(statement, forget)
        except TypeError:  # a statement class without weak references: its calls take the shape path
            return
        entry = _Entry(ref, None if dml else bound)
        if entry.variants is not None:
            entry.variants[tuple(params)] = bound
        _put(entries, key, entry, self.max_statements)


def _put(mapping: dict[Any, Any], key: Any, value: Any, limit: int) -> None:
    mapping[key] = value
    if len(mapping) > limit:
        # Oldest first: a plain dict keeps hits free of bookkeeping.
        del mapping[next(iter(mapping))]


_caches: weakref.WeakKeyDictionary[Dialect, StatementCache] = weakref.WeakKeyDictionary()


def statement_cache(engine: AsyncEngine) -> StatementCache:
    """The statement cache of ``engine``'s dialect (shared by the engines that share the dialect)."""
    traits = engine_traits(engine)
    cache: StatementCache | None = traits.statement_cache
    if cache is None:
        dialect = engine.sync_engine.dialect
        cache = _caches.get(dialect)
        if cache is None:
            cache = _caches[dialect] = StatementCache(dialect)
        # Remembered with the engine's traits: a unit of work finds it without the weak dictionary's calls.
        traits.statement_cache = cache
    return cache


# --- the two connections ---------------------------------------------------------------------------------------


class DriverSqlConnection:
    """``SqlConnection`` on a ``DriverConnection``: statements compiled once, run on the pooled asyncpg connection."""

    __slots__ = ("_cache", "connection")

    def __init__(self, connection: DriverConnection, cache: StatementCache) -> None:
        #: The driver connection, for SQL text (``fetch("... $1", value)``) beside the statements.
        self.connection = connection
        self._cache = cache

    # Each method runs its statement on the asyncpg connection itself, timed for the listeners as
    # DriverConnection's own methods do (DriverConnection._failed for errors): two coroutines fewer per statement.

    async def fetch_one(self, statement: Executable, params: Params | None = None) -> SqlRow | None:
        params = _NO_PARAMS if params is None else params
        bound = self._cache._bound(statement, params)
        plan = bound.plan
        if not plan.returns_rows:
            raise _no_rows()
        sql, args = bound.render(params)
        connection = self.connection
        started = perf_counter_ns()
        try:
            record = await connection.driver.fetchrow(sql, *args)
        except BaseException as exc:
            error = connection._failed(sql, started, exc)
            if error is exc:
                raise
            raise error from exc
        elapsed = perf_counter_ns() - started
        for listener in connection._listeners:
            listener(sql, elapsed, None)
        return None if record is None else plan.row(record)

    async def fetch_all(self, statement: Executable, params: Params | None = None) -> Sequence[SqlRow]:
        params = _NO_PARAMS if params is None else params
        bound = self._cache._bound(statement, params)
        plan = bound.plan
        if not plan.returns_rows:
            raise _no_rows()
        sql, args = bound.render(params)
        connection = self.connection
        started = perf_counter_ns()
        try:
            records = await connection.driver.fetch(sql, *args)
        except BaseException as exc:
            error = connection._failed(sql, started, exc)
            if error is exc:
                raise
            raise error from exc
        elapsed = perf_counter_ns() - started
        for listener in connection._listeners:
            listener(sql, elapsed, None)
        row = plan.row
        return [row(record) for record in records]

    async def fetch_value(self, statement: Executable, params: Params | None = None) -> Any:
        params = _NO_PARAMS if params is None else params
        bound = self._cache._bound(statement, params)
        plan = bound.plan
        if not plan.returns_rows:
            raise _no_rows()
        sql, args = bound.render(params)
        connection = self.connection
        started = perf_counter_ns()
        try:
            value = await connection.driver.fetchval(sql, *args)
        except BaseException as exc:
            error = connection._failed(sql, started, exc)
            if error is exc:
                raise
            raise error from exc
        elapsed = perf_counter_ns() - started
        for listener in connection._listeners:
            listener(sql, elapsed, None)
        process = plan.first_processor
        return value if process is None else process(value)

    async def execute(self, statement: Executable, params: Params | None = None) -> int:
        params = _NO_PARAMS if params is None else params
        sql, args = self._cache._bound(statement, params).render(params)
        connection = self.connection
        started = perf_counter_ns()
        try:
            status: str = await connection.driver.execute(sql, *args)
        except BaseException as exc:
            error = connection._failed(sql, started, exc)
            if error is exc:
                raise
            raise error from exc
        elapsed = perf_counter_ns() - started
        for listener in connection._listeners:
            listener(sql, elapsed, None)
        # "INSERT 0 1", "UPDATE 3", "SELECT 2"; commands without a count ("CREATE TABLE") have none.
        count = status.rpartition(" ")[2]
        return int(count) if count.isdigit() else -1


def _no_rows() -> ResourceClosedError:
    return ResourceClosedError("This result object does not return rows. It has been closed automatically.")


class SqlAlchemySqlConnection:
    """``SqlConnection`` on a SQLAlchemy ``AsyncConnection`` (SQLite, or any other dialect)."""

    __slots__ = ("connection",)

    def __init__(self, connection: AsyncConnection) -> None:
        self.connection = connection

    async def fetch_one(self, statement: Executable, params: Params | None = None) -> SqlRow | None:
        async with translate_db_errors():
            result = await self.connection.execute(statement, params)
            return result.first()

    async def fetch_all(self, statement: Executable, params: Params | None = None) -> Sequence[SqlRow]:
        async with translate_db_errors():
            result = await self.connection.execute(statement, params)
            return result.all()

    async def fetch_value(self, statement: Executable, params: Params | None = None) -> Any:
        async with translate_db_errors():
            result = await self.connection.execute(statement, params)
            return result.scalar()

    async def execute(self, statement: Executable, params: Params | None = None) -> int:
        async with translate_db_errors():
            result = await self.connection.execute(statement, params)
            # With RETURNING, the rows are the count (drivers' rowcount is unreliable there).
            return len(result.all()) if result.returns_rows else result.rowcount


# --- the unit of work ------------------------------------------------------------------------------------------


class SqlUnitOfWork(UnitOfWorkBase[SqlConnection]):
    """A unit of work whose repositories run SQLAlchemy Core statements on a ``SqlConnection``.

    On PostgreSQL through asyncpg it is a ``DriverUnitOfWorkBase`` (``DriverSqlConnection``), elsewhere a
    ``SqlAlchemyUnitOfWorkBase`` (``SqlAlchemySqlConnection``): the same checkout deadline, transactions for
    writes, single round trips for ``read_only`` and ``autocommit`` units, rollback unless ``commit()``.
    Subclasses create their repositories in ``_bind``::

        class PedidosUnitOfWork(SqlUnitOfWork):
            def _bind(self, connection: SqlConnection) -> None:
                self.pedidos = SqlPedidoRepository(connection)

        factory = PedidosUnitOfWork.factory(engine, acquire_timeout=2.0, replica=runtime.replica)
        async with factory(read_only=True) as unit: ...

    With a ``replica``, a read-only unit reads from it while it serves reads (``ReadReplica.should_read``). When
    the replica fails the unit (no connection to be had, a connection lost mid-statement, a server shutting
    down, a query cancelled by a conflict with recovery), the statement runs again on the primary, and so does the
    rest of the unit: a read-only unit has written nothing that could be lost. The replica is then left alone
    until its next sample finds it well. A statement that the replica's server cancelled at its
    ``statement_timeout`` (SQLSTATE 57014) is not run again; one it never answered (the client's bound) is.
    """

    def __init__(
        self,
        engine: AsyncEngine,
        *,
        read_only: bool = False,
        autocommit: bool = False,
        acquire_timeout: float | None = None,
        replica: ReadReplica | None = None,
    ) -> None:
        super().__init__(
            engine, read_only=read_only, autocommit=autocommit, acquire_timeout=acquire_timeout, replica=replica
        )
        self._options = {"read_only": read_only, "autocommit": autocommit, "acquire_timeout": acquire_timeout}
        self._unit: _DriverUnit | _SqlAlchemyUnit | None = None
        #: While the unit runs on the replica: the connection its repositories hold, which can move to the primary.
        self._reads: _ReplicaReads | None = None

    def _inner(self, engine: AsyncEngine) -> _DriverUnit | _SqlAlchemyUnit:
        traits = self._traits if engine is self._engine else engine_traits(engine)
        # SQLAlchemy renders a schema_translate_map at execution; the compiled statements here would not.
        if traits.asyncpg and not traits.schema_translate:
            cache = traits.statement_cache
            return _DriverUnit(self, statement_cache(engine) if cache is None else cache, engine, **self._options)
        return _SqlAlchemyUnit(self, engine, **self._options)

    async def __aenter__(self) -> Self:
        replica = self._replica
        if replica is not None and replica.should_read():
            self._reads = _ReplicaReads(self)
            try:
                await self._enter(self._inner(replica.engine))
            except DatabaseUnavailableError as exc:
                self._reads = None
                self._replica_failed(replica, exc)
            else:
                return self
        await self._enter(self._inner(self._engine))
        return self

    async def _enter(self, unit: _DriverUnit | _SqlAlchemyUnit) -> None:
        self._unit = unit
        try:
            await unit.__aenter__()
        except BaseException:
            # _bind() failed after the checkout: the connection would leak, as __aexit__ never runs.
            if unit._conn is not None:
                await unit.__aexit__(*sys.exc_info())
            self._conn = None
            raise

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        unit, self._unit = self._unit, None
        try:
            if unit is not None:
                await unit.__aexit__(exc_type, exc, tb)
        finally:
            self._conn = None
            self._reads = None

    async def commit(self) -> None:
        assert self._unit is not None, "commit() outside 'async with'"
        await self._unit.commit()

    async def rollback(self) -> None:
        assert self._unit is not None, "rollback() outside 'async with'"
        await self._unit.rollback()

    def _connect(self, connection: SqlConnection) -> None:
        reads = self._reads
        if reads is None:
            self._conn = connection
            self._bind(connection)
        elif reads.current is None:
            # On the replica: the repositories get the connection that can move to the primary.
            reads.current = connection
            self._conn = reads
            self._bind(reads)
        else:
            # Moved to the primary: the repositories keep the connection they hold, which now runs there.
            reads.current = connection

    async def _fail_over(self, error: ProductosError) -> bool:
        """Move this read-only unit from the replica to the primary after ``error``; whether it did (so that the
        failed statement runs again there). Errors of the primary itself, and statement timeouts, stay errors."""
        reads, replica = self._reads, self._replica
        if reads is None or reads.moved or replica is None:
            return False
        sqlstate = error_sqlstate(error)
        if sqlstate == _QUERY_CANCELED:
            return False
        reads.moved = True
        if isinstance(error, DatabaseUnavailableError) and sqlstate != _READ_ONLY_TRANSACTION:
            replica.unreachable(error.reason)
        left = self._unit
        self._unit = None
        if left is not None:
            # Its connection failed: released (and invalidated when the failure left it unusable), never waited on.
            with contextlib.suppress(ProductosError):
                await left.__aexit__(type(error), error, error.__traceback__)
        await self._enter(self._inner(self._engine))
        if sqlstate == _READ_ONLY_TRANSACTION:
            # The replica refused a write of this "read-only" unit; the primary takes it, as it would without one.
            note_write()
        return True


#: query_canceled: the server cancelled the statement at ``statement_timeout`` (or a user asked it to).
_QUERY_CANCELED = "57014"
#: read_only_sql_transaction: a write statement on a standby.
_READ_ONLY_TRANSACTION = "25006"


T = TypeVar("T")


class _ReplicaReads:
    """``SqlConnection`` of a read-only unit on the replica: a statement that the replica fails to answer runs
    again on the primary (``SqlUnitOfWork._fail_over``), as does everything after it."""

    __slots__ = ("current", "moved", "unit")

    def __init__(self, unit: SqlUnitOfWork) -> None:
        self.unit = unit
        self.current: SqlConnection | None = None
        self.moved = False

    def _connection(self) -> SqlConnection:
        assert self.current is not None, "statement outside 'async with'"
        return self.current

    async def _on_replica_or_primary(self, method: Callable[[SqlConnection], Awaitable[T]]) -> T:
        """``method`` on the replica's connection; once more on the primary's if the replica failed it."""
        try:
            return await method(self._connection())
        except _REPLICA_FAILURES as exc:
            if not await self.unit._fail_over(exc):
                raise
        return await method(self._connection())

    async def fetch_one(self, statement: Executable, params: Params | None = None) -> SqlRow | None:
        return await self._on_replica_or_primary(lambda connection: connection.fetch_one(statement, params))

    async def fetch_all(self, statement: Executable, params: Params | None = None) -> Sequence[SqlRow]:
        return await self._on_replica_or_primary(lambda connection: connection.fetch_all(statement, params))

    async def fetch_value(self, statement: Executable, params: Params | None = None) -> Any:
        return await self._on_replica_or_primary(lambda connection: connection.fetch_value(statement, params))

    async def execute(self, statement: Executable, params: Params | None = None) -> int:
        return await self._on_replica_or_primary(lambda connection: connection.execute(statement, params))


#: What a replica may fail a read with, and the primary may not: it is unreachable or going away
#: (``DatabaseUnavailableError``), or its replay cancelled the query (a conflict with recovery, SQLSTATE 40001,
#: or a lock held by the replay past ``lock_timeout``: ``ConcurrentUpdateError``).
_REPLICA_FAILURES = (DatabaseUnavailableError, ConcurrentUpdateError)


class _DriverUnit(DriverUnitOfWorkBase):
    def __init__(self, outer: SqlUnitOfWork, cache: StatementCache, engine: AsyncEngine, **options: Any) -> None:
        super().__init__(engine, **options)
        self._outer = outer
        self._cache = cache

    def _bind(self, connection: DriverConnection) -> None:
        self._outer._connect(DriverSqlConnection(connection, self._cache))


class _SqlAlchemyUnit(SqlAlchemyUnitOfWorkBase):
    def __init__(self, outer: SqlUnitOfWork, engine: AsyncEngine, **options: Any) -> None:
        super().__init__(engine, **options)
        self._outer = outer

    def _bind(self, connection: AsyncConnection) -> None:
        self._outer._connect(SqlAlchemySqlConnection(connection))
