"""A tiny Django project served by gunicorn (and forked by hand) in tests/test_prefork.py."""
