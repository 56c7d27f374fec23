"""REST views of runs: run an ingestion now, list its runs, read and cancel one."""

from drf_spectacular.utils import (
    OpenApiResponse,
    extend_schema,
)
from rest_framework import status
from rest_framework.response import Response

from .api import (
    COMMON_ERRORS,
    ERROR_SCHEMA,
    TenantAPIView,
)
from .models import (
    RunTrigger,
)
from .pagination import StrictLimitOffsetPagination
from .runs import run_cancel, run_request
from .selectors import (
    run_get,
    run_list,
)
from .serializers import (
    RunOutputSerializer,
)


class IngestionRunApi(TenantAPIView):
    @extend_schema(
        operation_id="ingestions_run",
        request=None,
        responses={
            202: RunOutputSerializer,
            409: OpenApiResponse(ERROR_SCHEMA, description="RUN_IN_PROGRESS (with current_run_id)"),
            **COMMON_ERRORS,
        },
    )
    def post(self, request, ingestion_id: str):
        ingestion = self.get_ingestion(ingestion_id, "run_ingestion")
        run = run_request(ingestion=ingestion, actor=request.user, trigger=RunTrigger.API)
        return Response(RunOutputSerializer(run).data, status=status.HTTP_202_ACCEPTED)


class IngestionRunsApi(TenantAPIView):
    Pagination = StrictLimitOffsetPagination

    pagination_class = Pagination  # read by the schema: the list is paginated

    @extend_schema(
        operation_id="ingestions_runs_list",
        responses={200: RunOutputSerializer(many=True), **COMMON_ERRORS},
    )
    def get(self, request, ingestion_id: str):
        ingestion = self.get_ingestion(ingestion_id, "view_run")
        paginator = self.Pagination()
        page = paginator.paginate_queryset(run_list(ingestion=ingestion), request, view=self)
        return paginator.get_paginated_response(RunOutputSerializer(page, many=True).data)


class RunDetailApi(TenantAPIView):
    @extend_schema(
        operation_id="runs_retrieve", responses={200: RunOutputSerializer, **COMMON_ERRORS}
    )
    def get(self, request, run_id: str):
        run = run_get(tenant=self.tenant, run_id=run_id)
        self.require("view_run", run.ingestion)
        return Response(RunOutputSerializer(run).data)


class RunCancelApi(TenantAPIView):
    @extend_schema(
        operation_id="runs_cancel",
        request=None,
        responses={
            202: RunOutputSerializer,
            409: OpenApiResponse(ERROR_SCHEMA, description="RUN_NOT_CANCELLABLE"),
            **COMMON_ERRORS,
        },
    )
    def post(self, request, run_id: str):
        run = run_get(tenant=self.tenant, run_id=run_id)
        self.require("run_ingestion", run.ingestion)
        run = run_cancel(run=run, actor=request.user)
        return Response(RunOutputSerializer(run).data, status=status.HTTP_202_ACCEPTED)
