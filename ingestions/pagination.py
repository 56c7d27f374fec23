"""Pagination of the API's lists that refuses malformed paging parameters (400) instead of
silently falling back to the defaults: `?limit=abc` is a client's mistake, not a page."""

import re

from rest_framework import serializers
from rest_framework.pagination import CursorPagination, LimitOffsetPagination

DIGITS = re.compile(r"[0-9]+")  # not int(): it also takes " 5", "+5", "5_0" and non-ASCII digits


def query_integer(request, name: str, *, minimum: int) -> int | None:
    """The query parameter `name` as an integer of at least `minimum`; None when absent.

    Raises:
        ValidationError: the parameter is present but not such an integer.
    """
    if name not in request.query_params:
        return None
    value = request.query_params[name]
    if DIGITS.fullmatch(value) is None or int(value) < minimum:
        raise serializers.ValidationError(
            {name: [f"Must be a whole number of at least {minimum}."]}
        )
    return int(value)


class StrictLimitOffsetPagination(LimitOffsetPagination):
    """`?limit=` (at least 1, capped at `max_limit`) and `?offset=` (at least 0)."""

    default_limit = 50
    max_limit = 500

    def get_limit(self, request):
        limit = query_integer(request, self.limit_query_param, minimum=1)
        return self.default_limit if limit is None else min(limit, self.max_limit)

    def get_offset(self, request):
        return query_integer(request, self.offset_query_param, minimum=0) or 0

    def get_schema_operation_parameters(self, view):
        minimum = {self.limit_query_param: 1, self.offset_query_param: 0}
        parameters = super().get_schema_operation_parameters(view)
        for parameter in parameters:
            parameter["schema"]["minimum"] = minimum[parameter["name"]]
        return parameters


class StrictCursorPagination(CursorPagination):
    """A cursor, and `?page_size=` (at least 1, capped at `max_page_size`)."""

    page_size_query_param = "page_size"

    def get_page_size(self, request):
        page_size = query_integer(request, self.page_size_query_param, minimum=1)
        if page_size is None:
            return self.page_size
        return min(page_size, self.max_page_size) if self.max_page_size else page_size

    def get_schema_operation_parameters(self, view):
        parameters = super().get_schema_operation_parameters(view)
        for parameter in parameters:
            if parameter["name"] == self.page_size_query_param:
                parameter["schema"]["minimum"] = 1
        return parameters
