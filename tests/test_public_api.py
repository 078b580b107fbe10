"""The library's surface is a promise: a few public modules, each with ``__all__``; services (ours included) and
examples import nothing else of productos."""

from __future__ import annotations

import ast
import importlib
import importlib.util
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

#: The public modules of the library, as the README lists them.
PUBLIC_MODULES = (
    "productos",
    "productos.runtime",
    "productos.settings",
    "productos.domain",
    "productos.db",
    "productos.migrations",
    "productos.pagination",
    "productos.http",
    "productos.observability",
    "productos.testing",
)
#: Services built on the library: each may import its own modules freely, and only public names of the rest.
SERVICES = {
    "productos.services.productos": ROOT / "productos" / "services" / "productos",
    "pedidos": ROOT / "examples" / "pedidos" / "pedidos",
}


def _imports(path: Path) -> Iterator[tuple[int, str, str | None]]:
    """Every ``(line, module, name)`` that ``path`` imports from productos (``name`` is None for ``import x``)."""
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            for alias in node.names:
                yield node.lineno, node.module, alias.name
        elif isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name, None


def _problems(path: Path, own_package: str | None) -> list[str]:
    problems = []
    for line, module, name in _imports(path):
        if not (module == "productos" or module.startswith("productos.")):
            continue
        if own_package is not None and (module == own_package or module.startswith(own_package + ".")):
            continue
        where = f"{path.name}:{line}"
        is_service_module = module.startswith("productos.services.")
        if module not in PUBLIC_MODULES and not is_service_module:
            problems.append(f"{where}: {module} is not a public module")
            continue
        exported = getattr(importlib.import_module(module), "__all__", None)
        if exported is None:
            problems.append(f"{where}: {module} has no __all__")
        elif name is not None and name not in exported and not _is_submodule(module, name):
            problems.append(f"{where}: {module}.{name} is not in its __all__")
    return problems


def _is_submodule(module: str, name: str) -> bool:
    return module.startswith("productos.services.") and importlib.util.find_spec(f"{module}.{name}") is not None


@pytest.mark.parametrize("module", PUBLIC_MODULES)
def test_each_public_module_exports_what_its_all_names(module: str) -> None:
    loaded = importlib.import_module(module)
    exported = loaded.__all__
    assert exported, f"{module} has an empty __all__"
    missing = [name for name in exported if not hasattr(loaded, name)]
    assert not missing, f"{module}.__all__ names what it does not define: {missing}"
    assert loaded.__doc__, f"{module} has no docstring"


@pytest.mark.parametrize("package", sorted(SERVICES))
def test_services_import_only_public_names(package: str) -> None:
    problems = [p for path in sorted(SERVICES[package].rglob("*.py")) for p in _problems(path, package)]
    assert not problems, "\n".join(problems)


def test_examples_import_only_public_names() -> None:
    paths = [p for p in sorted((ROOT / "examples").rglob("*.py")) if SERVICES["pedidos"] not in p.parents]
    problems = [p for path in paths for p in _problems(path, None)]
    assert not problems, "\n".join(problems)


def test_the_check_finds_a_private_import(tmp_path: Path) -> None:
    bad = tmp_path / "bad.py"
    bad.write_text(
        "from productos.infra.db.migrate import run_migrations\n"
        "from productos.domain import Producto\n"
        "from productos.pagination import Page\n"
    )
    problems = _problems(bad, None)
    assert len(problems) == 2
    assert "productos.infra.db.migrate is not a public module" in problems[0]
    assert "productos.domain.Producto is not in its __all__" in problems[1]


def test_the_readme_lists_every_public_module() -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    missing = [module for module in PUBLIC_MODULES if f"`{module}`" not in readme]
    assert not missing, f"README.md does not list: {missing}"


def test_old_names_still_resolve_with_a_deprecation_warning() -> None:
    import productos
    import productos.settings

    with pytest.warns(DeprecationWarning, match="productos.services.productos.app.create_app"):
        create_app = productos.create_app  # type: ignore[attr-defined]
    assert callable(create_app)
    with pytest.warns(DeprecationWarning, match="productos.runtime.load_settings"):
        load_settings = productos.settings.load_settings  # type: ignore[attr-defined]
    assert callable(load_settings)
