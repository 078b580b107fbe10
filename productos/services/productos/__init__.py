"""The products API (``/productos`` CRUD), productos' reference service.

Built on the library's public surface only, as any other service: ``app.py`` composes it, ``routes.py`` is its
HTTP edge, ``service.py`` its use cases, ``domain.py`` its entity, ``repository.py`` its storage, and
``migrations/`` its schema.
"""
