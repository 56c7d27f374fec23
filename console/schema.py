"""Post-processing of the OpenAPI schema: what drf-spectacular cannot infer from our classes.

- A request body from a `StrictSerializer` refuses unknown fields: its component says so
  with `additionalProperties: false`, so clients and generated requests know it.
- A list answers 400 VALIDATION_ERROR to a malformed paging parameter
  (`ingestions.pagination`): operations with one document that answer.
- A serializer's `openapi_extra` (a choice between fields, unique items, a field that may
  never be sent...) is merged into its request component.
- Text fields refuse NUL characters (PostgreSQL cannot store them) and, unless they may be
  blank, text that is only whitespace (DRF trims it): their schema says so with a pattern.

So the schema says what the server enforces: schemathesis's positive_data_acceptance and
negative_data_rejection checks hold (tests/reliability/test_fuzzing.py).
"""

from drf_spectacular.plumbing import ResolvedComponent

from ingestions.serializers import StrictSerializer

PAGING_PARAMETERS = {"limit", "offset", "page_size"}
ERROR_COMPONENT = "#/components/schemas/Error"


# No NUL anywhere; and at least one character that is not whitespace (nor NUL).
TEXT_PATTERN = r"^[^\x00]*$"
NOT_BLANK_TEXT_PATTERN = r"^[^\x00]*[^\s\x00][^\x00]*$"


def postprocess_schema(result, generator, request, public):
    schemas = result.get("components", {}).get("schemas", {})
    for name, serializer_class in strict_request_components(generator).items():
        if name in schemas and "properties" in schemas[name]:
            schemas[name]["additionalProperties"] = False
            _merge(schemas[name], serializer_class.openapi_extra)
            _text_patterns(schemas[name])
    for operation in _operations(result):
        _require_needed_body(operation, schemas)
        if "requestBody" in operation and "Error" in schemas:
            operation.setdefault("responses", {}).setdefault("413", _too_large())
    if "Error" in schemas:
        for operation in _operations(result):
            names = {parameter.get("name") for parameter in operation.get("parameters", [])}
            if names & PAGING_PARAMETERS:
                operation.setdefault("responses", {}).setdefault("400", _paging_error())
    return result


def strict_request_components(generator) -> dict[str, type]:
    """The request components generated from a `StrictSerializer` subclass: name -> class."""
    names = {}
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
            names[component.name] = serializer_class
    return names


def _require_needed_body(operation: dict, schemas: dict) -> None:
    """A body whose schema needs a field (confirm or dry_run...) cannot be left out either."""
    body = operation.get("requestBody")
    if not body:
        return
    for media in body.get("content", {}).values():
        ref = media.get("schema", {}).get("$ref", "")
        component = schemas.get(ref.rsplit("/", 1)[-1], {})
        if component.get("required") or component.get("anyOf"):
            body["required"] = True


def _merge(schema: dict, extra: dict) -> None:
    """Deep-merge `extra` into `schema`: dicts merge, anything else replaces."""
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(schema.get(key), dict):
            _merge(schema[key], value)
        else:
            schema[key] = value


def _text_patterns(schema) -> None:
    """Give each free text of a request schema the pattern the server enforces."""
    if isinstance(schema, list):
        for item in schema:
            _text_patterns(item)
        return
    if not isinstance(schema, dict):
        return
    if schema.get("type") == "string" and not {"pattern", "enum", "format"} & set(schema):
        blank = schema.get("minLength", 0) == 0
        schema["pattern"] = TEXT_PATTERN if blank else NOT_BLANK_TEXT_PATTERN
    for key in ("properties", "patternProperties"):
        for value in schema.get(key, {}).values():
            _text_patterns(value)
    for key in ("items", "additionalProperties", "not"):
        _text_patterns(schema.get(key))
    for key in ("anyOf", "oneOf", "allOf"):
        _text_patterns(schema.get(key, []))


def _operations(result):
    for path_item in result.get("paths", {}).values():
        for method, operation in path_item.items():
            if method in {"get", "put", "post", "patch", "delete"}:
                yield operation


def _too_large() -> dict:
    return {
        "content": {"application/json": {"schema": {"$ref": ERROR_COMPONENT}}},
        "description": "REQUEST_TOO_LARGE (a body above DATA_UPLOAD_MAX_MEMORY_SIZE)",
    }


def _paging_error() -> dict:
    return {
        "content": {"application/json": {"schema": {"$ref": ERROR_COMPONENT}}},
        "description": "VALIDATION_ERROR (a malformed limit, offset or page_size)",
    }
