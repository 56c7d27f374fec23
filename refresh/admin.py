"""Django admin of refresh operations and of the audit log, read-only, for auditors.

Nothing here adds, changes or deletes a record, not even for a superuser: they are what the
audit relies on (see `ingestions.admin`).

The audit entries of refresh operations are django-auditlog `LogEntry` rows whose
`additional_data` names the tenant, the operation and its outcome (see `refresh.audit`).
auditlog's own admin cannot filter on those, so it is replaced by a subclass that can.
"""

from auditlog import get_logentry_model
from auditlog.admin import LogEntryAdmin  # imported first: it registers the admin we replace
from django.contrib import admin

from ingestions.admin import ReadOnlyAdminMixin
from ingestions.models import Tenant

from .models import (
    OperationKind,
    OperationStatus,
    RefreshBatch,
    RefreshOperation,
    RefreshPlan,
    RefreshStep,
    Schedule,
    ScheduleFiring,
)

LogEntry = get_logentry_model()

REFUSED = "refused"  # the outcome `refresh.audit.record_refusal` writes


class RefreshStepInline(ReadOnlyAdminMixin, admin.TabularInline):
    model = RefreshStep
    extra = 0
    can_delete = False
    ordering = ["position"]
    fields = [
        "position",
        "name",
        "status",
        "started_at",
        "finished_at",
        "error_code",
        "error",
        "details",
    ]
    readonly_fields = fields


@admin.register(RefreshOperation)
class RefreshOperationAdmin(ReadOnlyAdminMixin, admin.ModelAdmin):
    list_display = [
        "public_id",
        "kind",
        "status",
        "ingestion_public_id",
        "tenant",
        "requested_by",
        "created_at",
    ]
    list_filter = ["kind", "status", "tenant"]
    list_select_related = ["tenant", "requested_by"]
    search_fields = ["public_id", "ingestion_public_id", "table_name", "requested_by__username"]
    date_hierarchy = "created_at"
    readonly_fields = [field.name for field in RefreshOperation._meta.fields]
    inlines = [RefreshStepInline]


@admin.register(RefreshPlan)
class RefreshPlanAdmin(ReadOnlyAdminMixin, admin.ModelAdmin):
    list_display = ["public_id", "kind", "ingestion", "created_by", "created_at", "used_at"]
    list_filter = ["kind", "ingestion__tenant"]
    list_select_related = ["ingestion", "created_by"]
    search_fields = ["public_id", "ingestion__public_id"]
    readonly_fields = [field.name for field in RefreshPlan._meta.fields]


@admin.register(RefreshBatch)
class RefreshBatchAdmin(ReadOnlyAdminMixin, admin.ModelAdmin):
    list_display = ["public_id", "kind", "status", "tenant", "requested_by", "created_at"]
    list_filter = ["kind", "status", "tenant"]
    search_fields = ["public_id", "failed_ingestion_id"]
    readonly_fields = [field.name for field in RefreshBatch._meta.fields]


@admin.register(Schedule)
class ScheduleAdmin(ReadOnlyAdminMixin, admin.ModelAdmin):
    # Set, paused, approved in the console or the API (`refresh.schedules`), where it is
    # audited; the admin only shows them.
    list_display = ["public_id", "ingestion", "action", "cron", "timezone", "paused"]
    list_filter = ["action", "paused", "ingestion__tenant"]
    search_fields = ["public_id", "ingestion__public_id"]
    readonly_fields = [field.name for field in Schedule._meta.fields]


@admin.register(ScheduleFiring)
class ScheduleFiringAdmin(ReadOnlyAdminMixin, admin.ModelAdmin):
    list_display = ["schedule", "slot", "outcome", "reason", "fired_at"]
    list_filter = ["outcome"]
    readonly_fields = [field.name for field in ScheduleFiring._meta.fields]


# --- the audit log -----------------------------------------------------------------------


class AdditionalDataFilter(admin.SimpleListFilter):
    """Filters log entries on one key of their `additional_data` JSON."""

    key: str

    def queryset(self, request, queryset):
        if self.value() is None:
            return queryset
        return queryset.filter(**{f"additional_data__{self.key}": self.value()})


class TenantFilter(AdditionalDataFilter):
    title = "tenant"
    parameter_name = key = "tenant"

    def lookups(self, request, model_admin):
        # From the tenants table, not a DISTINCT over the whole log (which only grows).
        return list(Tenant.objects.order_by("slug").values_list("slug", "slug"))


class OperationFilter(AdditionalDataFilter):
    title = "refresh operation"
    parameter_name = key = "operation"

    def lookups(self, request, model_admin):
        return OperationKind.choices


class OutcomeFilter(AdditionalDataFilter):
    title = "outcome"
    parameter_name = key = "outcome"

    def lookups(self, request, model_admin):
        finished = [
            (value, label)
            for value, label in OperationStatus.choices
            if value != OperationStatus.IN_PROGRESS  # never audited: entries are final
        ]
        return [*finished, (REFUSED, "Refused")]


def _additional(entry, key: str):
    return (entry.additional_data or {}).get(key)  # None shows as the admin's empty value


if admin.site.is_registered(LogEntry):
    admin.site.unregister(LogEntry)


@admin.register(LogEntry)
class AuditLogEntryAdmin(LogEntryAdmin):
    """auditlog's LogEntry admin, with the tenant, operation and outcome of refresh entries."""

    _after_action = LogEntryAdmin.list_display.index("action") + 1
    list_display = [
        *LogEntryAdmin.list_display[:_after_action],
        "audit_tenant",
        "audit_ingestion",
        "audit_operation",
        "audit_outcome",
        *LogEntryAdmin.list_display[_after_action:],
    ]
    list_filter = [*LogEntryAdmin.list_filter, TenantFilter, OperationFilter, OutcomeFilter]

    def has_delete_permission(self, request, obj=None):
        # Not even as a cascade from another admin page, which auditlog's own admin allows.
        return False

    @admin.display(description="tenant")
    def audit_tenant(self, entry):
        return _additional(entry, "tenant")

    @admin.display(description="ingestion")
    def audit_ingestion(self, entry):
        """Its name (as the entry recorded it) beside its id; auditlog's own "changes"
        column gives each value's old and new."""
        ingestion_id = _additional(entry, "ingestion_id")
        name = _additional(entry, "ingestion_name")
        if ingestion_id and name:
            return f"{name} ({ingestion_id})"
        return ingestion_id

    @admin.display(description="operation")
    def audit_operation(self, entry):
        return _additional(entry, "operation")

    @admin.display(description="outcome")
    def audit_outcome(self, entry):
        return _additional(entry, "outcome")
