"""Django admin for the domain: read-mostly views for operators and auditors."""

from django.contrib import admin

from .models import Ingestion, Membership, ProcessedFile, Run, RunBatch, Tenant


class MembershipInline(admin.TabularInline):
    model = Membership
    extra = 0
    autocomplete_fields = ["user"]


@admin.register(Tenant)
class TenantAdmin(admin.ModelAdmin):
    list_display = ["slug", "name", "created_at"]
    search_fields = ["slug", "name"]
    inlines = [MembershipInline]


@admin.register(Ingestion)
class IngestionAdmin(admin.ModelAdmin):
    list_display = [
        "public_id",
        "name",
        "tenant",
        "destination_table",
        "source_format",
        "protected",
    ]
    list_filter = ["tenant", "source_format", "engine", "protected"]
    search_fields = ["public_id", "name", "destination_table"]
    list_select_related = ["tenant"]


@admin.register(Run)
class RunAdmin(admin.ModelAdmin):
    list_display = [
        "public_id",
        "ingestion",
        "status",
        "trigger",
        "files_loaded",
        "files_failed",
        "created_at",
    ]
    list_filter = ["status", "trigger", "ingestion__tenant"]
    search_fields = ["public_id", "ingestion__public_id"]
    list_select_related = ["ingestion"]
    readonly_fields = [field.name for field in Run._meta.fields]


@admin.register(RunBatch)
class RunBatchAdmin(admin.ModelAdmin):
    list_display = ["batch_key", "run", "status", "rows", "snapshot_id", "created_at"]
    list_filter = ["status"]
    readonly_fields = [field.name for field in RunBatch._meta.fields]


@admin.register(ProcessedFile)
class ProcessedFileAdmin(admin.ModelAdmin):
    list_display = ["path", "ingestion", "size_bytes", "loaded_at"]
    search_fields = ["path", "ingestion__public_id"]
    list_select_related = ["ingestion"]
    show_full_result_count = False  # the history can be millions of rows
    readonly_fields = [field.name for field in ProcessedFile._meta.fields]
