"""A tiny Django project served by gunicorn (and forked by hand) in tests/system/test_prefork.py."""
