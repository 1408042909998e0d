"""Schemathesis hooks for wharf's API (loaded through SCHEMATHESIS_HOOKS).

A long operation answers with one JSON event per line (`application/x-ndjson`), which
schemathesis cannot read by itself. Every line must be a `DeployEvent` of the API's own
document: the lines before the last are checked here, and the last is handed back for
schemathesis' own response_schema_conformance check.
"""

import json

import jsonschema_rs
import schemathesis

_validators = {}


def _event_validator(raw_schema):
    key = id(raw_schema)
    if key not in _validators:
        root = {
            "$ref": "#/components/schemas/DeployEvent",
            "components": raw_schema.get("components", {}),
        }
        _validators[key] = jsonschema_rs.Draft202012Validator(root)
    return _validators[key]


@schemathesis.deserializer("application/x-ndjson")
def deploy_events(ctx, response):
    lines = [line for line in response.content.splitlines() if line.strip()]
    if not lines:
        raise ValueError("an event stream without a single event")
    events = [json.loads(line) for line in lines]
    validator = _event_validator(ctx.operation.schema.raw_schema)
    for number, event in enumerate(events[:-1], start=1):
        problems = [e.message for e in validator.iter_errors(event)]
        if problems:
            raise ValueError(f"event {number} is not a DeployEvent: {problems[0]}: {event}")
    last = events[-1].get("event")
    if last not in ("finished", "error"):
        raise ValueError(f"the stream ends with `{last}`, not `finished` or `error`")
    # An operation that could not run says so in its last event, with the status the
    # same error would have had as an answer: a 5xx there is a server error too.
    if last == "error" and int(events[-1].get("status", 400)) >= 500:
        raise ValueError(f"the operation failed inside the server: {events[-1]}")
    return events[-1]
