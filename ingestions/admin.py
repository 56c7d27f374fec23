"""Django admin for the domain: read-mostly views for operators and auditors.

The admin is no way around the rules: records the services write (runs, history, refresh
operations, audit entries) are read-only; ingestions only change protection (through
`ingestion_update`, audited); tenants and ingestions are never deleted here (it would
cascade to what audits rely on); storage locations are granted and revoked through
`ingestions.locations`, which checks overlaps and encrypts secrets.
"""

import contextlib

from django import forms
from django.contrib import admin
from django.core.exceptions import ValidationError

from .memberships import membership_remove, membership_set
from .models import (
    ApiToken,
    FileFailure,
    Ingestion,
    Membership,
    ProcessedFile,
    Run,
    RunBatch,
    StorageLocation,
    TableMaintenance,
    Tenant,
    VerifyJob,
)
from .services import ingestion_update


class ReadOnlyAdminMixin:
    """Records written by the services only: the admin shows them, never adds, edits or
    deletes them (not even a superuser)."""

    def has_add_permission(self, request, obj=None):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False


class MembershipInline(admin.TabularInline):
    model = Membership
    extra = 0
    autocomplete_fields = ["user"]


@admin.register(Tenant)
class TenantAdmin(admin.ModelAdmin):
    list_display = ["slug", "name", "created_at"]
    search_fields = ["slug", "name"]
    fields = ["slug", "name"]
    inlines = [MembershipInline]

    def has_delete_permission(self, request, obj=None):
        return False  # would cascade to its ingestions, operations and locations

    def save_formset(self, request, form, formset, change):
        if formset.model is not Membership:
            return super().save_formset(request, form, formset, change)
        # Through the service, so each added, changed or removed member is audited.
        for membership in formset.save(commit=False):
            if membership.pk is not None:
                before = Membership.objects.get(pk=membership.pk)
                if before.user_id != membership.user_id:  # a row given to someone else
                    membership_remove(membership=before, actor=request.user)
            membership_set(
                tenant=form.instance, user=membership.user, role=membership.role, actor=request.user
            )
        for membership in formset.deleted_objects:
            membership_remove(membership=membership, actor=request.user)


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
    readonly_fields = [field.name for field in Ingestion._meta.fields if field.name != "protected"]

    def has_add_permission(self, request):
        return False

    def has_delete_permission(self, request, obj=None):
        return False

    def save_model(self, request, obj, form, change):
        # The form already set `protected` on `obj`: the service compares with the stored
        # row, so that the change is saved and audited like one made through the API.
        stored = Ingestion.objects.get(pk=obj.pk)
        ingestion_update(ingestion=stored, data={"protected": obj.protected}, actor=request.user)


@admin.register(Run)
class RunAdmin(ReadOnlyAdminMixin, admin.ModelAdmin):
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
class RunBatchAdmin(ReadOnlyAdminMixin, admin.ModelAdmin):
    list_display = ["batch_key", "run", "status", "rows", "snapshot_id", "created_at"]
    list_filter = ["status"]
    readonly_fields = [field.name for field in RunBatch._meta.fields]


@admin.register(ProcessedFile)
class ProcessedFileAdmin(ReadOnlyAdminMixin, admin.ModelAdmin):
    list_display = ["path", "ingestion", "size_bytes", "loaded_at"]
    search_fields = ["path", "ingestion__public_id"]
    list_select_related = ["ingestion"]
    show_full_result_count = False  # the history can be millions of rows
    readonly_fields = [field.name for field in ProcessedFile._meta.fields]


@admin.register(FileFailure)
class FileFailureAdmin(ReadOnlyAdminMixin, admin.ModelAdmin):
    # Quarantined and released in the console or the API, where it is audited.
    list_display = ["path", "ingestion", "attempts", "quarantined_at", "last_failed_at"]
    list_filter = ["ingestion__tenant"]
    search_fields = ["path", "ingestion__public_id"]
    readonly_fields = [field.name for field in FileFailure._meta.fields]


@admin.register(ApiToken)
class ApiTokenAdmin(ReadOnlyAdminMixin, admin.ModelAdmin):
    # Made and revoked by their users in the console (audited); only digests are stored.
    list_display = ["name", "user", "prefix", "created_at", "last_used_at"]
    search_fields = ["name", "user__username", "prefix"]
    readonly_fields = [field.name for field in ApiToken._meta.fields]


@admin.register(TableMaintenance)
class TableMaintenanceAdmin(ReadOnlyAdminMixin, admin.ModelAdmin):
    list_display = ["started_at", "ingestion", "action", "snapshots_expired", "bytes_freed"]
    list_filter = ["action"]
    list_select_related = ["ingestion"]
    readonly_fields = [field.name for field in TableMaintenance._meta.fields]


@admin.register(VerifyJob)
class VerifyJobAdmin(ReadOnlyAdminMixin, admin.ModelAdmin):
    list_display = ["public_id", "ingestion", "status", "stage", "requested_by", "created_at"]
    list_filter = ["status", "ingestion__tenant"]
    search_fields = ["public_id", "ingestion__public_id"]
    list_select_related = ["ingestion", "requested_by"]
    readonly_fields = [field.name for field in VerifyJob._meta.fields]


# --- storage locations ------------------------------------------------------------------


class StorageLocationGrantForm(forms.ModelForm):
    """The add form: what `location_grant` takes; the grant happens as the form validates,
    so the service's refusal (a bad or overlapping URI) shows on the form."""

    secret_access_key = forms.CharField(
        label="S3 secret access key",
        required=False,
        strip=False,
        widget=forms.PasswordInput(render_value=False),  # never sent back to the browser
        help_text="Stored encrypted; never shown again.",
    )
    actor = None  # set per request by StorageLocationAdmin.get_form

    class Meta:
        model = StorageLocation
        fields = ["tenant", "uri", "name", "s3_endpoint_url", "s3_region", "s3_access_key_id"]

    def _post_clean(self):
        super()._post_clean()  # the fields and the model's own checks first
        if self.errors:
            return
        from .locations import location_grant

        data = self.cleaned_data
        try:
            self.instance = location_grant(
                tenant=data["tenant"],
                uri=data["uri"],
                name=data["name"],
                s3_endpoint_url=data["s3_endpoint_url"],
                s3_region=data["s3_region"],
                s3_access_key_id=data["s3_access_key_id"],
                s3_secret_access_key=data["secret_access_key"],
                actor=self.actor,
            )
        except ValidationError as refusal:
            self._show_refusal(refusal)

    def _show_refusal(self, refusal: ValidationError) -> None:
        if not hasattr(refusal, "error_dict"):
            self.add_error(None, refusal.messages)
            return
        for field, messages in refusal.message_dict.items():
            self.add_error(field if field in self.fields else None, messages)


@admin.register(StorageLocation)
class StorageLocationAdmin(admin.ModelAdmin):
    list_display = ["uri", "name", "tenant", "secret", "created_by", "created_at"]
    list_filter = ["tenant"]
    search_fields = ["uri", "name", "tenant__slug"]
    list_select_related = ["tenant", "created_by"]
    add_fields = [*StorageLocationGrantForm.Meta.fields, "secret_access_key"]
    # The grant is final but for its name: another URI or key is a revoke and a new grant.
    change_fields = [
        "tenant",
        "uri",
        "name",
        "s3_endpoint_url",
        "s3_region",
        "s3_access_key_id",
        "secret",
        "created_by",
        "created_at",
    ]

    @admin.display(description="S3 secret access key")
    def secret(self, location) -> str:
        return "set" if location.has_secret else "not set"

    def get_fields(self, request, obj=None):
        return self.add_fields if obj is None else self.change_fields

    def get_readonly_fields(self, request, obj=None):
        return [] if obj is None else [name for name in self.change_fields if name != "name"]

    def get_form(self, request, obj=None, change=False, **kwargs):
        if obj is not None:
            return super().get_form(request, obj, change=change, **kwargs)
        kwargs["form"] = StorageLocationGrantForm
        form = super().get_form(request, obj, change=change, **kwargs)
        form.actor = request.user  # a class made for this request by modelform_factory
        return form

    def save_model(self, request, obj, form, change):
        # Added: `location_grant` saved it as the form validated (`form.save` returns it).
        if change:
            obj.save(update_fields=["name"])

    def delete_model(self, request, obj):
        from .locations import location_revoke

        location_revoke(location=obj, actor=request.user)

    def delete_queryset(self, request, queryset):
        from .locations import location_revoke

        for location in queryset:
            location_revoke(location=location, actor=request.user)


# API tokens are `ingestions.ApiToken` (digests only, made and revoked by their users in the
# console). DRF's authtoken app stays installed only so migration 0008 can convert its rows;
# its admin would offer a second, clear-text token system.
with contextlib.suppress(admin.sites.NotRegistered):
    from rest_framework.authtoken.models import TokenProxy

    admin.site.unregister(TokenProxy)
