"""Adapters for the ports of ``productos.domain``: databases, AWS, in-memory fakes."""
