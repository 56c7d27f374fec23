"""Prometheus metrics at `/metrics`, computed from the database at scrape time.

The web processes and the workers are separate processes; counting from the durable
records (operations, runs) gives every scrape the same true totals, whichever process
answers it, and survives restarts.
"""

import hmac

from django.conf import settings
from django.db.models import Count, Sum
from django.http import HttpResponse, JsonResponse
from django.views.decorators.http import require_GET
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily

from ingestions.models import ACTIVE_RUN_STATUSES, Run

from .models import RefreshOperation

DURATION_BUCKETS = (0.1, 0.5, 1, 2, 5, 10, 30, 60, 300, float("inf"))
COST_BUCKETS = (1, 10, 50, 100, 250, 500, 1000, 5000, float("inf"))


def _histogram(
    name: str, documentation: str, values_by_label: dict, buckets
) -> HistogramMetricFamily:
    family = HistogramMetricFamily(name, documentation, labels=["operation_type"])
    for label, values in sorted(values_by_label.items()):
        cumulative = [
            (str(bound) if bound != float("inf") else "+Inf", sum(1 for v in values if v <= bound))
            for bound in buckets
        ]
        family.add_metric([label], cumulative, sum_value=sum(values))
    return family


class DatabaseCollector:
    """Refresh and run metrics read from the state database."""

    def collect(self):
        operations = CounterMetricFamily(
            "autoloader_refresh_operations",
            "Refresh operations by type and final status.",
            labels=["operation_type", "status"],
        )
        for row in RefreshOperation.objects.values("kind", "status").annotate(n=Count("id")):
            operations.add_metric([row["kind"], row["status"]], row["n"])
        yield operations

        durations: dict[str, list[float]] = {}
        costs: dict[str, list[float]] = {}
        finished = RefreshOperation.objects.filter(finished_at__isnull=False).values_list(
            "kind", "created_at", "finished_at", "impact"
        )
        for kind, created_at, finished_at, impact in finished.iterator():
            durations.setdefault(kind, []).append((finished_at - created_at).total_seconds())
            costs.setdefault(kind, []).append(float((impact or {}).get("estimated_cost_usd") or 0))
        yield _histogram(
            "autoloader_refresh_duration_seconds",
            "Time from request to the last step of refresh operations.",
            durations,
            DURATION_BUCKETS,
        )
        yield _histogram(
            "autoloader_refresh_cost_usd",
            "Estimated cost of executed refresh operations.",
            costs,
            COST_BUCKETS,
        )

        runs = CounterMetricFamily("autoloader_runs", "Runs by status.", labels=["status"])
        rows = CounterMetricFamily(
            "autoloader_run_rows_written", "Rows written by runs.", labels=["status"]
        )
        for row in Run.objects.values("status").annotate(n=Count("id"), rows=Sum("rows_written")):
            runs.add_metric([row["status"]], row["n"])
            rows.add_metric([row["status"]], row["rows"] or 0)
        yield runs
        yield rows
        yield GaugeMetricFamily(
            "autoloader_runs_active",
            "Runs queued or running now.",
            value=Run.objects.filter(status__in=ACTIVE_RUN_STATUSES).count(),
        )


REGISTRY = CollectorRegistry(auto_describe=False)
REGISTRY.register(DatabaseCollector())


def _may_scrape(request) -> bool:
    token = settings.AUTOLOADER_METRICS_TOKEN
    header = request.headers.get("Authorization", "")
    if token and hmac.compare_digest(header, f"Bearer {token}"):
        return True
    user = getattr(request, "user", None)
    return bool(user and user.is_authenticated and user.is_staff)


@require_GET
def metrics_view(request):
    # Metrics span every tenant: a scrape token (AUTOLOADER_METRICS_TOKEN) or a staff login.
    if not _may_scrape(request):
        return JsonResponse(
            {
                "detail": "Metrics need the scrape token or a staff login.",
                "error_code": "NOT_AUTHENTICATED",
            },
            status=401,
        )
    return HttpResponse(generate_latest(REGISTRY), content_type=CONTENT_TYPE_LATEST)
