"""Routers of the reference service."""
