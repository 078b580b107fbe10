"""``productos new NAME``: scaffold a service on productos that passes its own tests and serves at once.

It writes a project folder: the package (domain, ports, use cases, a repository of SQLAlchemy Core statements
declared once, routes, the app, in-memory fakes, Alembic migrations with their own version table), tests (the
repository contract on memory, SQLite and PostgreSQL, and the API in-process) and a README with the commands.
"""

from __future__ import annotations

import argparse
import datetime
import importlib.util
import keyword
import re
import sys
from importlib.resources import files
from importlib.resources.abc import Traversable
from pathlib import Path

from productos.version import __version__

__all__ = ["register", "render_service"]

_NAME = re.compile(r"^[a-z][a-z0-9_]{1,40}$")
_TEMPLATE_SUFFIX = ".tmpl"


def _entity_name(name: str) -> str:
    """The entity of a plural service name, as Spanish and English nouns mostly make it: facturas → factura."""
    base = name.removesuffix("es") if name.endswith(("ones", "ores")) else name.removesuffix("s")
    return base or name


def _pascal(snake: str) -> str:
    return "".join(part.capitalize() for part in snake.split("_"))


def _check_name(name: str, entity: str) -> str | None:
    """Why ``name`` cannot be a service package, or ``None``."""
    for label, value in (("NAME", name), ("--entity", entity)):
        if not _NAME.match(value) or keyword.iskeyword(value):
            return f"{label} {value!r} must be a lowercase Python identifier (letters, digits, _), 2 to 41 long"
    if importlib.util.find_spec(name) is not None:
        return f"NAME {name!r} is already an importable module here: the new package would shadow it"
    if name == entity:
        return f"NAME {name!r} and its entity name are the same: pass --entity (e.g. --entity {name}_item)"
    return None


def render_service(name: str, target: Path, *, entity: str | None = None) -> list[Path]:
    """Write the project of service ``name`` into ``target`` (which must not exist); the files written.

    Raises:
        ValueError: ``name`` or ``entity`` cannot be a package or class name, or ``target`` exists.
    """
    entity = entity or _entity_name(name)
    problem = _check_name(name, entity)
    if problem is not None:
        raise ValueError(problem)
    if target.exists():
        raise ValueError(f"{target} already exists: choose another --dir or remove it")
    tokens = {
        "{{service}}": name,
        "{{Entities}}": _pascal(name),
        "{{Entity}}": _pascal(entity),
        "{{entity}}": entity,
        "{{date}}": datetime.date.today().isoformat(),
        "{{productos_version}}": __version__,
    }
    written: list[Path] = []
    root = files("productos.entrypoints") / "scaffold"
    for source, relative in _templates(root, Path()):
        parts = [name if part == "package" else part for part in relative.parts]
        destination = target.joinpath(*parts).with_name(relative.name.removesuffix(_TEMPLATE_SUFFIX))
        text = source.read_text(encoding="utf-8")
        for token, value in tokens.items():
            text = text.replace(token, value)
        if destination.suffix == ".py":
            text = _sort_imported_names(text, name)
        destination.parent.mkdir(parents=True, exist_ok=True)
        destination.write_text(text, encoding="utf-8")
        written.append(destination)
    return written


def _sort_imported_names(text: str, package: str) -> str:
    """Sort the names of ``from <package>... import a, b`` lines as isort's order-by-type does (constants,
    classes, then functions), since the entity's name decides their order and linters check it."""

    def order(name: str) -> tuple[int, str]:
        return (0 if name.isupper() else 1 if name[0].isupper() else 2, name)

    lines = text.split("\n")
    for index, line in enumerate(lines):
        head, sep, names = line.partition(" import ")
        if sep and (head == f"from {package}" or head.startswith(f"from {package}.")) and "(" not in names:
            lines[index] = f"{head} import {', '.join(sorted(names.split(', '), key=order))}"
    return "\n".join(lines)


def _templates(folder: Traversable, relative: Path) -> list[tuple[Traversable, Path]]:
    found: list[tuple[Traversable, Path]] = []
    for item in sorted(folder.iterdir(), key=lambda entry: entry.name):
        if item.is_dir():
            found.extend(_templates(item, relative / item.name))
        elif item.name.endswith(_TEMPLATE_SUFFIX):
            found.append((item, relative / item.name))
    return found


def _new(args: argparse.Namespace) -> int:
    target = Path(args.dir) if args.dir else Path(args.name)
    try:
        written = render_service(args.name, target, entity=args.entity)
    except ValueError as exc:
        print(f"productos new: {exc}", file=sys.stderr)
        return 1
    print(f"created {target}/ ({len(written)} files). Next:")
    print(f"  cd {target} && pip install -e '.[test]' && python -m pytest")
    print(f"  productos serve --reload --app {args.name}.main:app")
    return 0


def register(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``new`` to the ``productos`` command."""
    new = commands.add_parser(
        "new",
        help="scaffold a service on productos (domain, repository, routes, migrations, tests)",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    new.add_argument("name", help="the service's package and table name, plural and lowercase (e.g. facturas)")
    new.add_argument("--entity", help="the entity's name, singular (default: NAME without its plural ending)")
    new.add_argument("--dir", help="where to write the project (default: ./NAME)")
    new.set_defaults(handler=_new)
