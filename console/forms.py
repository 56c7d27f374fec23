"""Forms of the console: list filters, the typed-name confirmation, the tenant switcher.

The confirmation is the console's own rule on top of the services' `confirm=True`: the
operator types the destination table's name, and the server compares it exactly.
"""

from django import forms

from ingestions.audit import CHANGE_ACTIONS
from ingestions.models import Membership, RunStatus
from refresh.models import OperationKind, OperationStatus

from .selectors import STATUS_FILTER_ACTIVE, STATUS_FILTER_NEVER

REFUSED_OUTCOME = "refused"  # what `refresh.audit.record_refusal` writes as the outcome


class IngestionFilterForm(forms.Form):
    q = forms.CharField(label="Search", required=False, max_length=200)
    status = forms.ChoiceField(
        label="Last run",
        required=False,
        choices=[
            ("", "Any status"),
            (STATUS_FILTER_ACTIVE, "Queued or running"),
            *[(status.value, status.label.capitalize()) for status in RunStatus],
            (STATUS_FILTER_NEVER, "Never run"),
        ],
    )

    def filters(self) -> dict:
        """The valid filters; an invalid value filters nothing rather than failing the page."""
        if not self.is_valid():
            return {"query": "", "status": ""}
        return {"query": self.cleaned_data["q"].strip(), "status": self.cleaned_data["status"]}


class ConfirmOperationForm(forms.Form):
    typed_name = forms.CharField(label="Table name", strip=False, max_length=200, required=False)
    plan_id = forms.CharField(required=False, max_length=63, widget=forms.HiddenInput)

    def __init__(self, *args, table_name: str, **kwargs):
        super().__init__(*args, **kwargs)
        self.table_name = table_name

    def clean_typed_name(self) -> str:
        typed = self.cleaned_data["typed_name"]
        if typed != self.table_name:
            shown = f"“{typed}”" if typed else "nothing"
            raise forms.ValidationError(
                f"You typed {shown}, which is not the table name {self.table_name}: "
                "nothing was changed. Type the name exactly to confirm.",
                code="name_mismatch",
            )
        return typed


class TenantSwitchForm(forms.Form):
    tenant = forms.ChoiceField(label="Tenant")

    def __init__(self, *args, user, **kwargs):
        super().__init__(*args, **kwargs)
        memberships = Membership.objects.filter(user=user).select_related("tenant")
        self.fields["tenant"].choices = [
            (membership.tenant.slug, membership.tenant.name)
            for membership in memberships.order_by("tenant__name")
        ]


class AuditFilterForm(forms.Form):
    operation = forms.ChoiceField(
        label="Operation",
        required=False,
        choices=[("", "Any operation"), *OperationKind.choices, *CHANGE_ACTIONS],
    )
    outcome = forms.ChoiceField(
        label="Outcome",
        required=False,
        choices=[
            ("", "Any outcome"),
            *[
                (status.value, status.label.capitalize())
                for status in OperationStatus
                if status != OperationStatus.IN_PROGRESS
            ],
            (REFUSED_OUTCOME, "Refused"),
        ],
    )
    actor = forms.CharField(label="User", required=False, max_length=150)
    ingestion = forms.CharField(label="Ingestion id", required=False, max_length=63)

    def filters(self) -> dict:
        if not self.is_valid():
            return {}
        data = self.cleaned_data
        return {
            "operation": data["operation"],
            "outcome": data["outcome"],
            "actor": data["actor"].strip(),
            "ingestion_id": data["ingestion"].strip(),
        }


class HistorySearchForm(forms.Form):
    path = forms.CharField(label="Path starts with", required=False, max_length=1024)
    after = forms.CharField(required=False, max_length=1024, widget=forms.HiddenInput)

    def search(self) -> tuple[str, str]:
        """(prefix, cursor); an invalid query (too long, a NUL) searches nothing special."""
        if not self.is_valid():
            return "", ""
        return self.cleaned_data["path"], self.cleaned_data["after"]
