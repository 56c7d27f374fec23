"""`/healthz`: 200 once the web process, the state database and the catalog are usable."""

import logging

from django.db import connection
from django.http import JsonResponse
from django.views.decorators.http import require_GET

from ingestions.engines import load_engine

logger = logging.getLogger("ingestions.health")


@require_GET
def healthz(request):
    # Public on purpose (load balancers call it): it says which part is down, never why;
    # the reason goes to the log.
    checks = {"database": "ok", "catalog": "ok"}
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
    except Exception:
        logger.exception("health check: database unusable")
        checks["database"] = "error"
    try:
        load_engine().ping()
    except Exception:
        logger.exception("health check: catalog unusable")
        checks["catalog"] = "error"
    healthy = all(value == "ok" for value in checks.values())
    return JsonResponse(
        {"status": "ok" if healthy else "unavailable", "checks": checks},
        status=200 if healthy else 503,
    )
