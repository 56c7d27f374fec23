"""Console pages of a user's own API tokens: list, create (shown once), revoke.

Tokens belong to the user, not to a tenant: the page needs a login, no tenant (the account
menu still shows the tenant the user acts for). The rules are `ingestions.tokens`'; these
views parse, call it and render. The page and its fragments share one context:
`token-panel` (a new key, the form, the list) answers a create, `token-list` a revoke.
Responses carry `Cache-Control: no-store`: a new key must not outlive its page.
"""

from django import forms
from django.contrib import messages
from django.core.exceptions import ValidationError
from django.http import Http404
from django.shortcuts import redirect, render
from django.urls import reverse
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_http_methods, require_POST

from ingestions import tokens
from ingestions.tenancy import NoTenantError, tenant_for_request

from .plumbing import login_view, render_in_place


class TokenCreateForm(forms.Form):
    name = forms.CharField(
        max_length=tokens.NAME_MAX_LENGTH,
        help_text="What uses it, e.g. “airflow-prod”: you will see it in the list and the audit.",
        widget=forms.TextInput(attrs={"autocomplete": "off", "placeholder": "airflow-prod"}),
    )


def _context(request, **extra) -> dict:
    try:
        tenant = tenant_for_request(request)  # for the account menu only
    except NoTenantError:
        tenant = None
    return {
        "tenant": tenant,
        "tokens": tokens.token_list(user=request.user),
        "api_url": request.build_absolute_uri(reverse("api-ingestions")),
        **extra,
    }


@never_cache
@require_http_methods(["GET", "POST"])
@login_view
def token_list(request):
    """The user's tokens and a form to make one; a made token's key is shown this once."""
    form = TokenCreateForm(request.POST if request.method == "POST" else None)
    created, key = None, None
    if form.is_valid():
        try:
            created, key = tokens.token_create(user=request.user, name=form.cleaned_data["name"])
        except ValidationError as exc:
            form.add_error(None, exc)
        else:
            form = TokenCreateForm()
    context = _context(request, form=form, created=created, key=key)
    status = 400 if form.errors else 200
    template = "partials/token-panel.html" if request.htmx else "tokens.html"
    return render_in_place(request, template, context, status=status)


@never_cache
@require_POST
@login_view
def token_revoke(request, token_id: int):
    """Revoke one of the user's tokens; another user's token id answers 404."""
    try:
        revoked = tokens.token_revoke(user=request.user, token_id=token_id)
    except tokens.TokenNotFoundError:
        raise Http404("No such token.") from None
    if request.htmx:
        return render(request, "partials/token-list.html", _context(request, revoked=revoked))
    messages.success(request, f"Token “{revoked.name}” revoked: its key no longer works.")
    return redirect("token-list")
