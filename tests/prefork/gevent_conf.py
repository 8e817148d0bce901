"""gunicorn config that monkey-patches the master, so that ``--preload`` loads the app
(and starts its ZooKeeper client) already under gevent."""

from gevent import monkey

monkey.patch_all()
