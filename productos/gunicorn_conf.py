"""gunicorn configuration tuned for EC2 instances behind an ALB: ``gunicorn -c python:productos.gunicorn_conf APP``.

The configuration lives in ``productos.entrypoints.gunicorn_conf``; this module keeps the documented path.
"""

from productos.entrypoints.gunicorn_conf import *  # noqa: F403
from productos.entrypoints.gunicorn_conf import __all__  # noqa: F401
