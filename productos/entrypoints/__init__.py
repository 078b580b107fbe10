"""Entry points: the ``productos`` command (``cli``, ``check``, ``aws_cli``, ``new``), the tuned gunicorn
configuration (``gunicorn_conf``) and its worker class (``worker``)."""
