#!/usr/bin/env python3
"""Checks docs/openapi.yaml, and real exchanges with `chainlog serve`, against it.

    check.py DOC            validate the document (openapi-spec-validator)
    check.py DOC EXCHANGES  also validate each recorded request and response
                            (openapi-core), and that every operation was exercised

EXCHANGES is a JSON array written by tests/openapi.rs. Each item has `name`,
`base_url` (the server that answered), `expect`, `method`, `path`, `query`
([[name, value], ...]), `headers`, `body` (text, or `body_base64`), `status`,
`response_headers` (lowercase names) and `response_body`. `expect` is one of:

- `valid`: the request and the response both conform to the document.
- `request_invalid`: the document says the request is wrong (no key, a bad
  parameter, a body the schema refuses), and the server's answer is one the
  document gives for that operation.
- `no_path`: the document has no such path; the answer is its `NotFound`.
- `no_method`: the path is documented without this method; the answer is its
  `MethodNotAllowed`, with `Allow` naming exactly the methods it documents.

Exits 1 listing every disagreement.
"""

import base64
import json
import re
import sys

from openapi_core import Config, OpenAPI
from openapi_core.datatypes import RequestParameters
from openapi_core.templating.paths.exceptions import OperationNotFound, PathNotFound
from openapi_core.validation.request.exceptions import RequestValidationError
from openapi_schema_validator import OAS31Validator
from openapi_spec_validator import validate as validate_spec
from openapi_spec_validator.readers import read_from_filename
from werkzeug.datastructures import Headers, ImmutableMultiDict

METHODS = ("get", "put", "post", "delete", "options", "head", "patch", "trace")


def ndjson_loads(value, **_parameters):
    """JSON Lines as the list of the lines' values (blank lines skipped)."""
    text = value.decode("utf-8") if isinstance(value, bytes) else value
    return [json.loads(line) for line in text.split("\n") if line.strip()]


def text_loads(value, **parameters):
    charset = parameters.get("charset", "utf-8")
    return value.decode(charset) if isinstance(value, bytes) else value


class Request:
    """openapi-core's Request protocol over a recorded exchange."""

    def __init__(self, host_url, exchange):
        self.host_url = host_url
        self.path = exchange["path"]
        self.method = exchange["method"].lower()
        headers = Headers(list(exchange.get("headers", {}).items()))
        self.content_type = (headers.get("Content-Type") or "").lower()
        self.body = body_bytes(exchange)
        self.parameters = RequestParameters(
            query=ImmutableMultiDict([tuple(p) for p in exchange.get("query", [])]),
            header=headers,
            cookie=ImmutableMultiDict(),
            path={},
        )


class Response:
    def __init__(self, exchange):
        self.status_code = exchange["status"]
        self.headers = Headers(list(exchange["response_headers"].items()))
        self.content_type = (self.headers.get("Content-Type") or "").lower()
        self.data = exchange["response_body"].encode("utf-8")


def body_bytes(exchange):
    if "body_base64" in exchange:
        return base64.b64decode(exchange["body_base64"])
    body = exchange.get("body")
    return None if body is None else body.encode("utf-8")


def template_regex(template):
    return re.compile("^" + re.sub(r"\\\{[^/]+?\\\}", "[^/]+", re.escape(template)) + "$")


def documented_response_schema(doc, name):
    """A validator for the JSON body of components/responses/NAME."""
    schema = dict(doc)
    schema["$ref"] = f"#/components/responses/{name}/content/application~1json/schema"
    return OAS31Validator(schema)


def check_exchanges(doc, openapi, exchanges):
    failures = []
    exercised = set()
    paths = {template: template_regex(template) for template in doc["paths"]}

    def fail(exchange, message):
        failures.append(
            f"{exchange['name']}: {exchange['method']} {exchange['path']} -> {exchange['status']}: {message}"
        )

    for exchange in exchanges:
        expect = exchange["expect"]
        response = Response(exchange)
        if response.headers.get("X-Content-Type-Options") != "nosniff":
            fail(exchange, "no `X-Content-Type-Options: nosniff`, which the document promises")
        matching = [t for t, rx in paths.items() if rx.match(exchange["path"])]
        if expect in ("no_path", "no_method"):
            documented = sorted(
                m.upper() for t in matching for m in doc["paths"][t] if m in METHODS
            )
            if expect == "no_path" and matching:
                fail(exchange, f"expected no documented path, but {matching} match")
                continue
            if expect == "no_method" and (
                not matching or exchange["method"].upper() in documented
            ):
                fail(exchange, f"expected an undocumented method; documented: {documented}")
                continue
            name = "NotFound" if expect == "no_path" else "MethodNotAllowed"
            status = 404 if expect == "no_path" else 405
            if response.status_code != status:
                fail(exchange, f"the document says {status} ({name})")
            try:
                body = json.loads(exchange["response_body"])
            except ValueError as e:
                fail(exchange, f"the answer is not JSON: {e}")
                continue
            for error in documented_response_schema(doc, name).iter_errors(body):
                fail(exchange, f"body does not match {name}: {error.message}")
            if expect == "no_method":
                allow = sorted(
                    m.strip() for m in (response.headers.get("Allow") or "").split(",") if m.strip()
                )
                if allow != documented:
                    fail(exchange, f"Allow is {allow}, the document lists {documented}")
            continue

        request = Request(exchange["base_url"], exchange)
        request_errors = []
        try:
            openapi.validate_request(request)
        except (PathNotFound, OperationNotFound) as e:
            fail(exchange, f"no documented operation: {e}")
            continue
        except RequestValidationError as e:
            request_errors.append(describe(e))
        if expect == "valid" and request_errors:
            fail(exchange, f"the document refuses this request: {request_errors[0]}")
        if expect == "request_invalid" and not request_errors:
            fail(exchange, "the document accepts this request, but it was expected to refuse it")
        try:
            openapi.validate_response(request, response)
        except Exception as e:  # every validation failure is a disagreement
            fail(exchange, f"response does not conform: {describe(e)}")
        template = matching[0] if matching else None
        exercised.add((template, exchange["method"].lower(), response.status_code))

    operations = {
        (template, method)
        for template, item in doc["paths"].items()
        for method in item
        if method in METHODS
    }
    hit = {(t, m) for (t, m, _) in exercised}
    for template, method in sorted(operations - hit):
        failures.append(f"{method.upper()} {template}: documented but never exercised")
    untested = sorted(
        (template, method, status)
        for template, method in operations
        for status in doc["paths"][template][method]["responses"]
        if (template, method, int(status)) not in exercised
    )
    return failures, exercised, untested


def describe(e):
    parts = [f"{type(e).__name__}: {e}"]
    cause = e.__cause__
    while cause is not None:
        parts.append(f"{type(cause).__name__}: {cause}")
        for sub in getattr(cause, "schema_errors", None) or []:
            parts.append(f"  - {sub.message} at {list(sub.absolute_path)}")
        cause = cause.__cause__
    return "\n    ".join(parts)


def main(argv):
    if len(argv) not in (2, 3):
        print(__doc__, file=sys.stderr)
        return 2
    spec, _ = read_from_filename(argv[1])
    validate_spec(spec)
    print(f"{argv[1]}: a valid OpenAPI {spec['openapi']} document")
    if len(argv) == 2:
        return 0
    with open(argv[2], encoding="utf-8") as f:
        exchanges = json.load(f)
    config = Config(
        extra_media_type_deserializers={
            "application/x-ndjson": ndjson_loads,
            "text/csv": text_loads,
            # A live tail's body (recorded up to its first events).
            "text/event-stream": text_loads,
        }
    )
    openapi = OpenAPI.from_file_path(argv[1], config=config)
    failures, exercised, untested = check_exchanges(spec, openapi, exchanges)
    print(
        f"{len(exchanges)} exchanges checked; "
        f"{len(exercised)} (operation, status) pairs exercised"
    )
    if untested:
        print("documented answers not exercised: " + ", ".join(
            f"{m.upper()} {t} {s}" for t, m, s in untested
        ))
    if failures:
        print(f"\n{len(failures)} disagreement(s) between the document and the server:")
        for failure in failures:
            print(f"- {failure}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
