"""Prometheus metrics at `/metrics`, computed from the database at scrape time.

The web processes and the workers are separate processes; counting from the durable
records (operations, runs) gives every scrape the same true totals, whichever process
answers it, and survives restarts.
"""

import hmac

from auditlog.models import LogEntry
from django.conf import settings
from django.db.models import Count, Sum
from django.db.models.fields.json import KT
from django.http import HttpResponse, JsonResponse
from django.views.decorators.http import require_GET
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily

from ingestions.models import ACTIVE_RUN_STATUSES, Run

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
    """Refresh and run metrics read from the state database.

    Refresh counts come from the audit log, which only grows: one entry per executed
    attempt (a resume is a second attempt) and per refusal, so the counters never go down.
    """

    def collect(self):
        audited = LogEntry.objects.filter(additional_data__has_key="outcome").annotate(
            operation_type=KT("additional_data__operation"), outcome=KT("additional_data__outcome")
        )
        operations = CounterMetricFamily(
            "autoloader_refresh_operations",
            "Refresh operation attempts by type and outcome (refused attempts included).",
            labels=["operation_type", "status"],
        )
        for row in audited.values("operation_type", "outcome").annotate(n=Count("id")):
            operations.add_metric([row["operation_type"], row["outcome"]], row["n"])
        yield operations

        durations: dict[str, list[float]] = {}
        costs: dict[str, list[float]] = {}
        executed = audited.exclude(additional_data__outcome="refused").values_list(
            "operation_type", "additional_data"
        )
        for operation_type, data in executed.iterator():
            if data.get("duration_seconds") is not None:
                durations.setdefault(operation_type, []).append(float(data["duration_seconds"]))
            cost = (data.get("impact") or {}).get("estimated_cost_usd") or 0
            costs.setdefault(operation_type, []).append(float(cost))
        yield _histogram(
            "autoloader_refresh_duration_seconds",
            "Time to execute the steps of a refresh operation attempt.",
            durations,
            DURATION_BUCKETS,
        )
        yield _histogram(
            "autoloader_refresh_cost_usd",
            "Estimated cost of executed refresh operation attempts.",
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
