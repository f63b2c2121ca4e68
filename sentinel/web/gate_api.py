"""The gate's HTTP face: `GET`/`POST /api/v1/gate` (query parameters, or Flagger's webhook
payload) and `GET /api/v1/gate/history`. Thin: parsing is `gate/request.py`, the verdict
`gate/service.py`; this module maps them onto status codes and headers."""

from __future__ import annotations

import json
from typing import Any

from aiohttp import web

from sentinel import jsonenc
from sentinel.config import GateConfig
from sentinel.errors import GateInputError, GateOverloaded, StateStoreError
from sentinel.gate.request import (
    GateRequest,
    audit_inputs,
    flagger_token,
    parse_flagger,
    parse_query,
)
from sentinel.gate.service import HISTORY_LIMIT, MAX_BODY, STATUS_CODE, Gate
from sentinel.web.app import answers_store_errors, json_response, require_token, store_unavailable


def gate_routes(gate: Gate) -> list[web.RouteDef]:
    # Query string (and the labels config it was checked against) -> the parsed request
    # and its audit text. A pipeline fleet polls with the same few query strings; parsing
    # and JSON-encoding them again was a fifth of a request's cost. Only requests without
    # `since` are kept: `since` is checked against the clock (a deploy start in the
    # future is refused), everything else is a pure function of the text.
    parsed: dict[tuple[str, tuple[str, ...], tuple[str, ...]], tuple[GateRequest, str]] = {}

    def parse_get(request: web.Request, now: float, config: GateConfig) -> tuple[GateRequest, str]:
        key = (request.query_string, tuple(config.request_labels), tuple(config.canary.labels))
        hit = parsed.get(key)
        if hit is not None:
            return hit
        req = parse_query(request.query, now, config.request_labels, config.canary.labels)
        found = (req, jsonenc.dumps(audit_inputs(req)))
        if req.since is None:
            if len(parsed) >= 1000:  # bounded: a flood of distinct query strings
                parsed.clear()
            parsed[key] = found
        return found

    @answers_store_errors
    async def handle(request: web.Request) -> web.Response:
        started = gate.monotonic()
        config = gate.host.config.gate
        now = gate.host.clock()
        inputs = None
        try:
            if request.method == "POST":
                body = await _json_body(request)
                require_token(request, flagger_token(body))
                req = parse_flagger(body, now, config.request_labels, config.canary.labels)
            else:
                require_token(request)
                req, inputs = parse_get(request, now, config)
            known = req.service in gate.known_services()
            if known:
                answer = await gate.check(req, now, started + config.deadline)
            else:
                unknown = gate.unknown_service(req, now)  # pending while it may be known soon
                if unknown is None:
                    return json_response(
                        {"error": f"service: unknown service {req.service!r}", "decision": None},
                        status=404,
                    )
                answer = unknown
        except GateInputError as exc:
            return json_response({"error": str(exc), "parameter": exc.param}, status=400)
        except GateOverloaded as exc:
            return json_response(
                {"error": f"gate overloaded: {exc}; retry later", "decision": None},
                status=429,
                headers={"Retry-After": str(exc.retry_after)},
            )
        except StateStoreError as exc:  # the gate answers from memory; should one need it
            return store_unavailable(exc)
        if known:  # an unknown service's answer is audited by `unknown_service`
            gate.audit(req, now, answer.decision, answer.body, inputs)
        return web.Response(
            text=answer.body,
            status=200 if req.decision_in_body else STATUS_CODE[answer.decision],
            headers={"Retry-After": answer.retry_after} if answer.retry_after else {},
            content_type="application/json",
        )

    async def history(request: web.Request) -> web.Response:
        require_token(request)
        text = request.query.get("limit", "100")
        limit = int(text) if text.isascii() and text.isdigit() and len(text) < 10 else 0
        if limit < 1:
            return json_response(
                {"error": f"limit: expected an integer from 1 to {HISTORY_LIMIT}, got {text!r}"},
                status=400,
            )
        if gate.store is None:
            return json_response([])
        gate.flush_audit()
        service = request.query.get("service")
        return json_response(gate.store.gate_history(service, min(limit, HISTORY_LIMIT)))

    return [
        web.get("/api/v1/gate", handle),
        web.post("/api/v1/gate", handle),
        web.get("/api/v1/gate/history", history),
    ]


async def _json_body(request: web.Request) -> Any:
    if (request.content_length or 0) > MAX_BODY:
        raise GateInputError("body", f"larger than {MAX_BODY // 1024} KiB")
    raw = await request.read()  # bounded by the app's client_max_size as well
    if len(raw) > MAX_BODY:
        raise GateInputError("body", f"larger than {MAX_BODY // 1024} KiB")
    try:
        return json.loads(raw)
    except (ValueError, RecursionError):
        raise GateInputError("body", "expected a JSON object (Flagger's webhook payload)") from None
