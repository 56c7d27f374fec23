"""Console pages. The full console is built in its own issue; this is the landing page."""

from django.contrib.auth.decorators import login_required
from django.shortcuts import render

from ingestions.errors import AutoloaderError
from ingestions.selectors import ingestion_list
from ingestions.tenancy import tenant_for_request


@login_required
def home(request):
    try:
        tenant = tenant_for_request(request)
    except AutoloaderError as exc:
        return render(request, "home.html", {"error": str(exc)}, status=403)
    return render(
        request, "home.html", {"tenant": tenant, "ingestions": ingestion_list(tenant=tenant)}
    )
