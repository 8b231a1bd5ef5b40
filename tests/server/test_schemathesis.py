"""schemathesis against the OpenAPI schema: generated requests, fitting the schema and not, never
get a 500, and every answer matches what the schema documents for it.

Each operation (and each body media type) is a test case, run for a bounded number of examples,
with every schemathesis check but one: "schema-valid request rejected". A schema cannot say which
bytes decode as an image or which tag and label names the loaded checkpoints have, so schema-valid
requests with random bytes or names are rightly 422 (documented as such).

(schemathesis's own pytest plugin does not load under pytest 9, so the operations are driven
through hypothesis directly; the generation and checks are schemathesis's.)
"""

from __future__ import annotations

import base64
import json
from pathlib import Path

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schemathesis.generation import GenerationMode
from schemathesis.specs.openapi.checks import positive_data_acceptance

from taglens.server import Settings, create_app

from .conftest import encoded

SNAPSHOT = Path(__file__).with_name("openapi.json")
KEY = "schemathesis-key-0123456789"
EXAMPLES = {GenerationMode.POSITIVE: 20, GenerationMode.NEGATIVE: 10}
# base64 image data ("format": "byte"): real images half the time, so generated options reach the
# models (multipart uploads already draw schemathesis's own real image samples)
IMAGES = [base64.b64encode(encoded(seed, fmt)).decode() for seed, fmt in enumerate(("JPEG", "PNG", "WEBP", "GIF"))]
schemathesis.openapi.format("byte", st.one_of(st.sampled_from(IMAGES), st.binary().map(lambda b: base64.b64encode(b)
                                                                                            .decode())))


def operations():
    spec = json.loads(SNAPSHOT.read_text())
    for path, methods in spec["paths"].items():
        for method, operation in methods.items():
            media = list(operation.get("requestBody", {}).get("content", {})) or [None]
            for media_type in media:
                for mode in EXAMPLES:
                    label = f"{method.upper()} {path}" + (f" {media_type}" if media_type else "") + f" {mode.value}"
                    yield pytest.param(method.upper(), path, media_type, mode, id=label)


@pytest.fixture(scope="module")
def api_schema(models, library):
    """A server with an API key, so that schemathesis also checks that auth is enforced."""
    app = create_app(Settings(**models, device="cpu", library=library["folder"], allowed_hosts=("testserver",),
                              api_key=KEY))
    return schemathesis.openapi.from_asgi("/openapi.json", app)


@pytest.mark.filterwarnings("ignore::taglens.errors.PromptTruncatedWarning")
@pytest.mark.parametrize("method, path, media_type, mode", list(operations()))
def test_no_input_makes_the_api_fail(api_schema, method, path, media_type, mode):
    operation = api_schema[path][method]

    @given(case=operation.as_strategy(mode, media_type=media_type))
    @settings(max_examples=EXAMPLES[mode], deadline=None, database=None, derandomize=True,
              suppress_health_check=list(HealthCheck))
    def check(case):
        case.call_and_validate(headers={"Authorization": f"Bearer {KEY}"}, excluded_checks=[positive_data_acceptance])

    check()
