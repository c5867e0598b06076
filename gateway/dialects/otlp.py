"""OTLP/HTTP logs on the shared `POST /v1/logs`: the key as `Authorization: Bearer <key>`,
or in the header an operator names (`MILLRACE_OTLP_KEY_HEADER`, kept in the app as KEY_HEADER).

The answer is an `ExportLogsServiceResponse` in the request's encoding (protobuf or OTLP
JSON), with `partial_success.rejected_log_records` and `error_message` when records were
refused; errors carry a `google.rpc.Status` in the same encoding, with the OTLP status
codes (400, 401, 403, 413, 415; 429 and 503 with `Retry-After`, the retryable ones).
"""

from __future__ import annotations

from typing import Final

import orjson
from aiohttp import web
from google.protobuf import descriptor_pb2, message_factory
from google.protobuf.message import Message
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceResponse

from formats import Parsed
from formats.otlp import PROTOBUF
from gateway.dialects.base import Dialect, Problem, bearer
from millrace.keys import SCOPE_LOGS

KEY_HEADER: Final = web.AppKey("otlp_key_header", str)
_SHOWN: Final = 20
_GRPC_CODES: Final = {400: 3, 401: 16, 403: 7, 408: 4, 413: 8, 415: 3, 429: 8, 503: 14}


def _status_class() -> type[Message]:
    """google.rpc.Status (code, message; no details), declared through the protobuf runtime."""
    f = descriptor_pb2.FieldDescriptorProto
    file = descriptor_pb2.FileDescriptorProto(name="millrace_rpc_status.proto", package="millrace.rpc")
    file.syntax = "proto3"
    m = file.message_type.add(name="Status")
    m.field.add(name="code", number=1, type=f.TYPE_INT32, label=f.LABEL_OPTIONAL)
    m.field.add(name="message", number=2, type=f.TYPE_STRING, label=f.LABEL_OPTIONAL)
    status: type[Message] = message_factory.GetMessages([file])["millrace.rpc.Status"]
    return status


Status: Final = _status_class()


def _headers(retry_after: int | None) -> dict[str, str] | None:
    return {"Retry-After": str(retry_after)} if retry_after is not None else None


def _partial(parsed: Parsed) -> tuple[int, str]:
    if not parsed.rejected:
        return 0, ""
    named = "; ".join(r.reason for r in parsed.rejected[:_SHOWN])
    more = f" (and {len(parsed.rejected) - _SHOWN} more)" if len(parsed.rejected) > _SHOWN else ""
    return len(parsed.rejected), named + more


def _success_protobuf(parsed: Parsed, received_at_ns: int) -> web.Response:
    response = ExportLogsServiceResponse()
    rejected, message = _partial(parsed)
    if rejected:
        response.partial_success.rejected_log_records = rejected
        response.partial_success.error_message = message
    return web.Response(status=200, body=response.SerializeToString(), content_type=PROTOBUF)


def _success_json(parsed: Parsed, received_at_ns: int) -> web.Response:
    rejected, message = _partial(parsed)
    body = (
        {"partialSuccess": {"rejectedLogRecords": str(rejected), "errorMessage": message}} if rejected else {}
    )
    return web.Response(status=200, body=orjson.dumps(body), content_type="application/json")


def _error_protobuf(problem: Problem) -> web.Response:
    status = Status(code=_GRPC_CODES.get(problem.status, 2), message=problem.message)
    return web.Response(
        status=problem.status,
        body=status.SerializeToString(),
        content_type=PROTOBUF,
        headers=_headers(problem.retry_after),
    )


def _error_json(problem: Problem) -> web.Response:
    body = {"code": _GRPC_CODES.get(problem.status, 2), "message": problem.message}
    return web.Response(
        status=problem.status,
        body=orjson.dumps(body),
        content_type="application/json",
        headers=_headers(problem.retry_after),
    )


def configured_header(request: web.Request) -> str:
    """The operator's OTLP key header ('' when none is set)."""
    return request.config_dict.get(KEY_HEADER, "")


def token(request: web.Request) -> str | None:
    header = configured_header(request)
    if header and (value := request.headers.get(header, "").strip()):
        return value
    return bearer(request)


OTLP_PROTOBUF = Dialect(
    name="otlp", scope=SCOPE_LOGS, token=token, success=_success_protobuf, error=_error_protobuf
)
OTLP_JSON = Dialect(name="otlp", scope=SCOPE_LOGS, token=token, success=_success_json, error=_error_json)
