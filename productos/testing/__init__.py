"""Test helpers for services built on productos (import them in tests, not in the runtime):

- ``RecordingPublisher``: a metrics publisher that records what it gets and fails on demand.
"""

from productos.testing.publishers import RecordingPublisher

__all__ = ["RecordingPublisher"]
