"""Post-processing of the OpenAPI schema: what drf-spectacular cannot infer from our classes.

- A request body from a `StrictSerializer` refuses unknown fields: its component says so
  with `additionalProperties: false`, so clients and generated requests know it.
- A list answers 400 VALIDATION_ERROR to a malformed paging parameter
  (`ingestions.pagination`): operations with one document that answer.
"""

from drf_spectacular.plumbing import ResolvedComponent

from ingestions.serializers import StrictSerializer

PAGING_PARAMETERS = {"limit", "offset", "page_size"}
ERROR_COMPONENT = "#/components/schemas/Error"


def postprocess_schema(result, generator, request, public):
    schemas = result.get("components", {}).get("schemas", {})
    for name in strict_request_components(generator):
        if name in schemas and "properties" in schemas[name]:
            schemas[name]["additionalProperties"] = False
    if "Error" in schemas:
        for operation in _operations(result):
            names = {parameter.get("name") for parameter in operation.get("parameters", [])}
            if names & PAGING_PARAMETERS:
                operation.setdefault("responses", {}).setdefault("400", _paging_error())
    return result


def strict_request_components(generator) -> set[str]:
    """Names of the request components generated from a `StrictSerializer` subclass."""
    names = set()
    # The registry maps each component to the serializer it was generated from; it is the
    # only place that knows (a component's name says nothing of its class).
    for component in generator.registry._components.values():
        serializer = component.object
        serializer_class = serializer if isinstance(serializer, type) else type(serializer)
        if (
            component.type == ResolvedComponent.SCHEMA
            and issubclass(serializer_class, StrictSerializer)
            # COMPONENT_SPLIT_REQUEST: the request side of a serializer is "...Request".
            and component.name.endswith("Request")
        ):
            names.add(component.name)
    return names


def _operations(result):
    for path_item in result.get("paths", {}).values():
        for method, operation in path_item.items():
            if method in {"get", "put", "post", "patch", "delete"}:
                yield operation


def _paging_error() -> dict:
    return {
        "content": {"application/json": {"schema": {"$ref": ERROR_COMPONENT}}},
        "description": "VALIDATION_ERROR (a malformed limit, offset or page_size)",
    }
