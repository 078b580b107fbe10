"""``python -m productos``: the ``productos`` command."""

from productos.entrypoints.cli import main

raise SystemExit(main())
