"""Schema fuzzing: schemathesis generates requests for every operation of the OpenAPI document
served at /v1/schema/ and sends them to a live server (pytest-django's live_server, a real
HTTP server in a thread) with a valid read-write key of a seeded tenant.

Checks on every response: no 5xx; the status code is one the document lists; the body matches
the document's schema for that status (errors: the envelope, `ErrorEnvelope`); and, beyond the
schema, every 4xx carries the envelope with a non-empty code.

Size: FUZZ_MAX_EXAMPLES examples per operation (CI: 8; `make fuzz`: 100). The operations run
one after another inside one test, so a new endpoint is fuzzed as soon as it is in the schema.
"""

from __future__ import annotations

import os
import time

import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given
from hypothesis import settings as hypothesis_settings
from schemathesis import GenerationMode
from schemathesis.checks import (
    content_type_conformance,
    not_a_server_error,
    response_schema_conformance,
    status_code_conformance,
)

from tests.security.helpers import seed_tenant

MAX_EXAMPLES = int(os.environ.get("FUZZ_MAX_EXAMPLES", "8"))


def envelope_on_errors(ctx, response, case):
    """Every 4xx answer is the API's error envelope."""
    if 400 <= response.status_code < 500:
        body = response.json()
        assert set(body) == {"error"}, body
        assert body["error"]["code"] and isinstance(body["error"]["message"], str), body
        assert isinstance(body["error"]["details"], dict), body
    return None


@pytest.fixture
def fuzz_target(live_server, make_tenant, settings, redis_url, tiny_base_path):
    from adapters.runtime import runtime_reset

    settings.BASE_MODEL_PATH = str(tiny_base_path)
    settings.BASE_MODEL_HF_ID = ""
    settings.CHAT_MAX_NEW_TOKENS = 4
    # Path parameters are pinned to the seeded tenant and its real objects (random ids would
    # only ever test the 404 path); bodies, queries and headers are generated.
    runtime_reset()
    seeded = seed_tenant(make_tenant, "fuzzco", "FUZZMARK", job_hex="cccc3333cccc",
                         version_number=3, username="fuzz-user")
    yield live_server.url, seeded
    runtime_reset()


def _fuzz_operation(operation, mode, *, base_url: str, secret: str, pinned: dict) -> None:
    params = {p.name for p in operation.iter_parameters() if p.location == "path"}
    strategy = operation.as_strategy(generation_mode=mode,
                                     path_parameters={k: v for k, v in pinned.items()
                                                      if k in params})

    @given(case=strategy)
    @hypothesis_settings(max_examples=MAX_EXAMPLES, deadline=None, derandomize=True, database=None,
              phases=[Phase.explicit, Phase.generate], suppress_health_check=list(HealthCheck))
    def run(case):
        started = time.monotonic()
        response = case.call(base_url=base_url, headers={"Authorization": f"Bearer {secret}"},
                             timeout=60)
        if os.environ.get("FUZZ_VERBOSE"):
            print(mode.value, case.method, case.formatted_path, response.status_code,
                  round(time.monotonic() - started, 2), flush=True)
        case.validate_response(response, checks=CHECKS)
        assert time.monotonic() - started < 30, f"{case.method} {case.path} took too long"

    run()




def _describe(exc: BaseException) -> str:
    parts = [f"{type(exc).__name__}: {exc}"]
    for inner in getattr(exc, "exceptions", ()) or ():
        parts.append(f"  - {type(inner).__name__}: {str(inner)[:600]}")
    return "\n".join(parts)[:3000]


CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance,
          response_schema_conformance, envelope_on_errors]


@pytest.mark.django_db(transaction=True, serialized_rollback=True)
@pytest.mark.slow
def test_it_answers_every_generated_request_within_the_schema(fuzz_target):
    base_url, seeded = fuzz_target
    schema = schemathesis.openapi.from_url(f"{base_url}/v1/schema/?format=json")
    pinned = {"tenant": seeded.slug, "conversation_id": seeded.conversation_id,
              "dataset_id": seeded.dataset_id, "job_id": seeded.job_id,
              "version": seeded.version, "key_id": seeded.spare_key_id,
              "webhook_id": seeded.webhook_id}
    failures, operations = {}, 0
    for result in schema.get_all_operations():
        operation = result.ok()
        operations += 1
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
            try:
                _fuzz_operation(operation, mode, base_url=base_url, secret=seeded.ctx.secret,
                                pinned=pinned)
            except (KeyboardInterrupt, SystemExit):
                raise
            except BaseException as exc:  # noqa: BLE001 - schemathesis raises exception groups
                failures[f"{mode.value} {operation.label}"] = _describe(exc)
    assert operations >= 30, operations
    assert not failures, "\n\n".join(f"{k}:\n{v}" for k, v in failures.items())


@pytest.mark.django_db
def test_every_operation_documents_the_error_envelope_and_the_key(client):
    document = client.get("/v1/schema/", HTTP_ACCEPT="application/json").json()
    assert document["components"]["securitySchemes"]["ApiKeyBearer"]["scheme"] == "bearer"
    for path, operations in document["paths"].items():
        if not path.startswith("/v1/tenants/"):
            continue
        for method, operation in operations.items():
            for status in ("400", "401", "403", "404", "429"):
                ref = operation["responses"][status]["content"]["application/json"]["schema"]
                assert ref == {"$ref": "#/components/schemas/ErrorEnvelope"}, (method, path)
            assert {"ApiKeyBearer": []} in operation["security"], (method, path)
