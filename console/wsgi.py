"""WSGI entry point (gunicorn console.wsgi)."""

import os

from django.core.wsgi import get_wsgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "console.settings")
application = get_wsgi_application()

from ingestions.engines.spark import sessions  # noqa: E402 - needs the apps loaded

# A web process never starts a Spark application (it would hold a cluster's cores for its
# whole life): it reads table metadata through the shared catalog; runs go to the worker.
sessions.forbid_here("web process")
