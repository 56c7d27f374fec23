"""Console pages of a user's own API tokens: list, create (shown once), revoke."""

from django.http import Http404


def token_list(request):
    raise Http404


def token_revoke(request, token_id: int):
    raise Http404
