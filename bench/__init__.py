"""Benchmarks of productos against the limits of its stack, a typical FastAPI service and the original app."""
