"""AWS Lambda handler: `spladerunner.serverless.handler(event, context)` expands texts with one Expander.

The model is loaded once per container, outside the request path: at import when the module runs under
the Lambda runtime (`AWS_LAMBDA_RUNTIME_API` is set, so loading happens in Lambda's init phase and a
broken model fails the init with its own error), else at the first request; a lock makes it once.

Events: a direct invocation (the request object itself), API Gateway REST (payload 1.0: `httpMethod`,
`body`, `isBase64Encoded`), API Gateway HTTP and Function URLs (payload 2.0: `version`,
`requestContext.http.method`). The request is a JSON object:

    {"texts": ["...", ...] | "text": "...", "query": false, "top_k": null, "threshold": 0.0,
     "format": "tokens" | "ids"}

and the answer `{"model", "precision", "vectors": [{"tokens": {token: weight}, "truncated"}, ...]}`
(`"ids": [...], "weights": [...]` per vector with format "ids"), in input order.

HTTP events get `{statusCode, headers, body}`: 400 for a bad request (the message names the field and
position), 405 for a method other than POST, 413 for an answer over Lambda's 6 MB response limit (the
message says how many texts would fit), 500 for anything else (logged with its traceback; the body only
says where to look). Direct invocations return the answer itself and raise `BadRequest`,
`PayloadTooLarge` or `InternalError` (Lambda reports the class name as `errorType`), the convention for
direct invokes and what Step Functions' Retry/Catch match on.

Configuration (environment): SPLADERUNNER_MODEL (a model folder or a built-in name; default the built-in
`splade-tiny`), SPLADERUNNER_PRECISION, SPLADERUNNER_THREADS, SPLADERUNNER_MAX_TEXTS (per request,
default 128) and SPLADERUNNER_MAX_TEXT_CHARS (per text, default 20000).
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
import os
import threading
from dataclasses import dataclass
from typing import Any

from .arguments import check_count, check_threshold
from .errors import InputError, SpladerunnerError

logger = logging.getLogger("spladerunner")

MODEL_ENV = "SPLADERUNNER_MODEL"
PRECISION_ENV = "SPLADERUNNER_PRECISION"
THREADS_ENV = "SPLADERUNNER_THREADS"
MAX_TEXTS_ENV = "SPLADERUNNER_MAX_TEXTS"
MAX_TEXT_CHARS_ENV = "SPLADERUNNER_MAX_TEXT_CHARS"
DEFAULT_MODEL = "splade-tiny"  # the built-in model: no download, no Hub client in the package
DEFAULT_MAX_TEXTS = 128
DEFAULT_MAX_TEXT_CHARS = 20_000
# Lambda's limit on a synchronous invocation's response (the whole serialised JSON, envelope included).
RESPONSE_LIMIT = 6 * 1024 * 1024
ENVELOPE_BYTES = 256  # statusCode and headers around an HTTP answer's body
FIELDS = ("texts", "text", "query", "top_k", "threshold", "format")
FORMATS = ("tokens", "ids")
JSON_HEADERS = {"content-type": "application/json"}


class BadRequest(InputError):
    """The request cannot be served as sent (HTTP 400, or 405 for a method other than POST)."""

    def __init__(self, message: str, status: int = 400):
        super().__init__(message)
        self.status = status


class PayloadTooLarge(InputError):
    """The answer would exceed Lambda's 6 MB response limit (HTTP 413); the message says how to page."""

    status = 413


class InternalError(SpladerunnerError, RuntimeError):
    """Anything else (HTTP 500): the details are in the function's log, not in the answer."""

    status = 500


@dataclass(frozen=True)
class Request:
    """A checked request: what `expand_batch` is called with, and the answer's format."""

    texts: list[str]
    query: bool = False
    top_k: int | None = None
    threshold: float = 0.0
    format: str = "tokens"


_lock = threading.Lock()
_expander: Any = None


def expander() -> Any:
    """The container's one Expander, made on first use from the environment (thread-safe, once)."""
    global _expander
    if _expander is None:
        with _lock:
            if _expander is None:
                from .expander import Expander

                _expander = Expander(os.environ.get(MODEL_ENV) or DEFAULT_MODEL,
                                     precision=os.environ.get(PRECISION_ENV) or None,
                                     threads=_env_count(THREADS_ENV, None))
    return _expander


def _env_count(name: str, default: int | None) -> int | None:
    """A positive integer from the environment, `default` when unset; a malformed value is a configuration
    error (a 500, logged), never quietly the default."""
    value = os.environ.get(name)
    if not value:
        return default
    try:
        return check_count(name, int(value))
    except ValueError:
        raise InputError(f"{name} must be a positive integer, got {value!r}") from None


def handler(event: Any, context: Any = None) -> dict[str, Any]:
    """The Lambda entry point: see the module docstring for events, requests, answers and errors."""
    http = _http_version(event)
    try:
        answer, body = _answer(_request_payload(event, http))
        return answer if http is None else {"statusCode": 200, "headers": JSON_HEADERS, "body": body}
    except (BadRequest, PayloadTooLarge) as exc:
        if http is None:
            raise
        headers = {**JSON_HEADERS, "allow": "POST"} if exc.status == 405 else JSON_HEADERS
        return {"statusCode": exc.status, "headers": headers, "body": json.dumps({"error": str(exc)})}
    except Exception:
        request_id = getattr(context, "aws_request_id", None)
        logger.exception("spladerunner: request %s failed", request_id)
        message = f"internal error; see the function's log (request id {request_id})"
        if http is None:
            raise InternalError(message) from None
        return {"statusCode": 500, "headers": JSON_HEADERS, "body": json.dumps({"error": message})}


def _http_version(event: Any) -> str | None:
    """"1.0" (API Gateway REST), "2.0" (HTTP API, Function URL), or None for a direct invocation."""
    if not isinstance(event, dict) or not isinstance(event.get("requestContext"), dict):
        return None
    if event.get("version") == "2.0" and isinstance(event["requestContext"].get("http"), dict):
        return "2.0"
    if "httpMethod" in event:
        return "1.0"
    return None


def _request_payload(event: Any, http: str | None) -> Any:
    """The request object: the event itself, or an HTTP event's body decoded (base64) and parsed (JSON)."""
    if http is None:
        return event
    method = event["requestContext"]["http"].get("method") if http == "2.0" else event.get("httpMethod")
    if method != "POST":
        raise BadRequest(f"method {method} not allowed: POST a JSON object such as {{\"texts\": [\"...\"]}}", 405)
    body = event.get("body")
    if not body:
        raise BadRequest("the request body is empty: POST a JSON object such as {\"texts\": [\"...\"]}")
    if not isinstance(body, str):
        raise BadRequest(f"body is {type(body).__name__}, expected a string")
    if event.get("isBase64Encoded"):
        try:
            raw = base64.b64decode(body, validate=True)
        except (binascii.Error, ValueError):
            raise BadRequest("body: isBase64Encoded is true but the body is not valid base64") from None
        try:
            body = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise BadRequest(f"body is not UTF-8 (invalid byte at offset {exc.start})") from None
    try:
        return json.loads(body)
    except json.JSONDecodeError as exc:
        raise BadRequest(f"body is not valid JSON: {exc.msg} at line {exc.lineno} column {exc.colno}") from None
    except RecursionError:
        raise BadRequest("body is not valid JSON: nested too deeply") from None


def parse_request(payload: Any, *, max_texts: int = DEFAULT_MAX_TEXTS,
                  max_text_chars: int = DEFAULT_MAX_TEXT_CHARS) -> Request:
    """Check a request object against the fields above and the limits (`BadRequest` names the field)."""
    from .expander import check_texts

    if not isinstance(payload, dict):
        raise BadRequest(f"the request must be a JSON object, got {_json_type(payload)}")
    unknown = sorted(set(payload) - set(FIELDS))
    if unknown:
        raise BadRequest(f"unknown field(s) {unknown}; the fields are {list(FIELDS)}")
    if ("texts" in payload) == ("text" in payload):
        raise BadRequest("send either texts (a list of strings) or text (one string)")
    try:
        if "texts" in payload:
            if not isinstance(payload["texts"], list):
                raise BadRequest(f"texts must be a list of strings, got {_json_type(payload['texts'])} "
                                 "(for one text, send text)")
            texts = check_texts(payload["texts"])
        else:
            if not isinstance(payload["text"], str):
                raise BadRequest(f"text must be a string, got {_json_type(payload['text'])}")
            texts = check_texts(payload["text"])
        if len(texts) > max_texts:
            raise BadRequest(f"texts holds {len(texts)} texts, more than {max_texts} per request "
                             f"({MAX_TEXTS_ENV}): send them in several requests")
        for position, text in enumerate(texts):
            if len(text) > max_text_chars:
                where = f"texts[{position}]" if "texts" in payload else "text"
                raise BadRequest(f"{where} has {len(text)} characters, more than {max_text_chars} "
                                 f"({MAX_TEXT_CHARS_ENV}); the model reads only its first few hundred tokens anyway")
        query = payload.get("query", False)
        if not isinstance(query, bool):
            raise BadRequest(f"query must be true or false, got {_json_type(query)}")
        top_k = payload.get("top_k")
        if top_k is not None:
            check_count("top_k", top_k)
        threshold = check_threshold(payload.get("threshold", 0.0))
        fmt = payload.get("format", "tokens")
        if fmt not in FORMATS:
            raise BadRequest(f"format must be one of {list(FORMATS)}, got {fmt!r}")
    except InputError as exc:
        if isinstance(exc, BadRequest):
            raise
        raise BadRequest(str(exc)) from None
    return Request(texts, query=query, top_k=top_k, threshold=threshold, format=fmt)


def _json_type(value: Any) -> str:
    names = {dict: "an object", list: "an array", str: "a string", bool: "a boolean", type(None): "null",
             int: "a number", float: "a number"}
    return names.get(type(value), type(value).__name__)


def _answer(payload: Any) -> tuple[dict[str, Any], str]:
    """Expand a request object -> (answer, its JSON). The model and the limits come first: their errors are
    the configuration's (500), not the request's."""
    model = expander()
    request = parse_request(payload, max_texts=_env_count(MAX_TEXTS_ENV, DEFAULT_MAX_TEXTS),
                            max_text_chars=_env_count(MAX_TEXT_CHARS_ENV, DEFAULT_MAX_TEXT_CHARS))
    batch = model.expand_batch(request.texts, query=request.query, top_k=request.top_k,
                               threshold=request.threshold)
    if request.format == "tokens":
        vectors = [{"tokens": vector.to_dict(), "truncated": vector.truncated} for vector in batch]
    else:
        vectors = [{"ids": vector.ids.tolist(), "weights": vector.weights.tolist(), "truncated": vector.truncated}
                   for vector in batch]
    answer = {"model": model.source.name, "precision": model.precision, "vectors": vectors}
    body = json.dumps(answer)
    # An HTTP envelope carries the body as a JSON string (quotes escaped): the larger of the two forms.
    size = len(json.dumps(body)) + ENVELOPE_BYTES
    if size > RESPONSE_LIMIT:
        fit = max(len(request.texts) * RESPONSE_LIMIT // size, 1)
        raise PayloadTooLarge(f"the answer is {size} bytes, over Lambda's {RESPONSE_LIMIT}-byte response limit: "
                              f"send fewer texts per request (about {fit} of these {len(request.texts)} would "
                              "fit), or a smaller top_k")
    return answer, body


if "AWS_LAMBDA_RUNTIME_API" in os.environ:  # under Lambda's runtime: load in the init phase
    expander()
