"""The Lambda handler on the built-in model: direct, REST (1.0), HTTP API (2.0) and Function URL events as AWS
documents them (`lambda_events`), every kind of bad request, internal errors and the 6 MB response limit.
The package that runs it on Lambda is tested in test_lambda_package.py."""

from __future__ import annotations

import json
import logging
import threading
from types import SimpleNamespace

import pytest
from lambda_events import encoded, function_url, http_v2, rest_v1

from spladerunner import Expander, serverless
from spladerunner.serverless import BadRequest, InternalError, PayloadTooLarge, handler

TEXTS = ["what is the capital of france", "SPLADE expands texts into weighted vocabulary terms."]
CONTEXT = SimpleNamespace(aws_request_id="8476a536-e9f4-11e8-9739-2dfe598c3fcd")


@pytest.fixture(scope="module")
def builtin() -> Expander:
    return Expander("splade-tiny")


def test_a_direct_invocation_returns_the_expanders_vectors(builtin):
    answer = handler({"texts": TEXTS, "query": True, "top_k": 5}, CONTEXT)
    expected = builtin.expand_batch(TEXTS, query=True, top_k=5)
    assert answer["model"] == "splade-tiny" and answer["precision"] == "int8"
    assert [v["tokens"] for v in answer["vectors"]] == [v.to_dict() for v in expected]
    assert [v["truncated"] for v in answer["vectors"]] == [False, False]
    assert list(answer["vectors"][0]["tokens"].values()) == sorted(answer["vectors"][0]["tokens"].values(),
                                                                   reverse=True)


def test_ids_format_and_one_text(builtin):
    answer = handler({"text": TEXTS[1], "format": "ids", "threshold": 0.5})
    [expected] = builtin.expand_batch(TEXTS[1], threshold=0.5)
    [vector] = answer["vectors"]
    assert vector["ids"] == expected.ids.tolist() and vector["weights"] == expected.weights.tolist()
    assert min(vector["weights"]) > 0.5


@pytest.mark.parametrize("make_event", [rest_v1, http_v2, function_url], ids=["rest-v1", "http-v2", "function-url"])
@pytest.mark.parametrize("base64_body", [False, True], ids=["json", "base64"])
def test_http_events_answer_like_a_direct_invocation(make_event, base64_body):
    request = {"texts": TEXTS, "top_k": 8}
    body = encoded(request) if base64_body else json.dumps(request)
    response = handler(make_event(body, base64_encoded=base64_body), CONTEXT)
    assert response["statusCode"] == 200 and response["headers"]["content-type"] == "application/json"
    assert json.loads(response["body"]) == handler(request)


def test_non_ascii_texts_round_trip():
    response = handler(http_v2(json.dumps({"text": "café crème brûlée"}, ensure_ascii=False)))
    assert response["statusCode"] == 200
    assert json.loads(response["body"]) == handler({"text": "café crème brûlée"})


BAD_REQUESTS = [
    ({"texts": "one text"}, "texts must be a list of strings, got a string"),
    ({"texts": ["ok", 3]}, "texts[1] is int"),
    ({"texts": ["ok", None]}, "texts[1] is NoneType"),
    ({"text": ["a"]}, "text must be a string, got an array"),
    ({"texts": ["a"], "text": "b"}, "either texts"),
    ({"query": True}, "either texts"),
    ({"texts": ["a"], "top-k": 3}, "unknown field(s) ['top-k']"),
    ({"texts": ["a"], "query": "yes"}, "query must be true or false, got a string"),
    ({"texts": ["a"], "query": 1}, "query must be true or false, got a number"),
    ({"texts": ["a"], "top_k": 0}, "top_k must be an integer >= 1"),
    ({"texts": ["a"], "top_k": 2.5}, "top_k must be an integer"),
    ({"texts": ["a"], "top_k": True}, "top_k must be an integer"),
    ({"texts": ["a"], "threshold": -1}, "threshold must be a finite number >= 0"),
    ({"texts": ["a"], "threshold": "0.1"}, "threshold must be a number"),
    ({"texts": ["a"], "format": "xml"}, "format must be one of ['tokens', 'ids']"),
    ({"texts": ["a", "\ud800"]}, "texts[1] holds a lone surrogate U+D800"),
    ({"texts": ["a"] * 129}, "texts holds 129 texts, more than 128 per request (SPLADERUNNER_MAX_TEXTS)"),
    ({"texts": ["a", "b" * 20_001]}, "texts[1] has 20001 characters, more than 20000"),
    ({"text": "b" * 20_001}, "text has 20001 characters"),
    (["a", "b"], "the request must be a JSON object, got an array"),
]


@pytest.mark.parametrize(("request_", "message"), BAD_REQUESTS)
def test_bad_requests_get_400_naming_the_field(request_, message):
    response = handler(rest_v1(json.dumps(request_)))
    assert response["statusCode"] == 400
    assert message in json.loads(response["body"])["error"]
    with pytest.raises(BadRequest) as raised:  # a direct invocation raises instead (errorType BadRequest)
        handler(request_)
    assert message in str(raised.value)


@pytest.mark.parametrize(("event", "message"), [
    (http_v2("{\"texts\": [\"a\"]"), "body is not valid JSON: Expecting ',' delimiter at line 1 column 16"),
    (http_v2("[" * 100_000), "body is not valid JSON"),
    (function_url("not base64!", base64_encoded=True), "isBase64Encoded is true but the body is not valid base64"),
    (function_url("/w==", base64_encoded=True), "body is not UTF-8 (invalid byte at offset 0)"),
    (http_v2(None), "the request body is empty"),
    (rest_v1(None), "the request body is empty"),
])
def test_bodies_that_do_not_parse_get_400(event, message):
    response = handler(event)
    assert response["statusCode"] == 400
    assert message in json.loads(response["body"])["error"]


@pytest.mark.parametrize("event", [rest_v1(None, method="GET"), http_v2(None, method="PUT"),
                                   function_url(None, method="GET")])
def test_methods_other_than_post_get_405(event):
    response = handler(event)
    assert response["statusCode"] == 405 and response["headers"]["allow"] == "POST"
    assert "not allowed: POST a JSON object" in json.loads(response["body"])["error"]


def test_the_limits_come_from_the_environment(monkeypatch):
    monkeypatch.setenv("SPLADERUNNER_MAX_TEXTS", "2")
    monkeypatch.setenv("SPLADERUNNER_MAX_TEXT_CHARS", "10")
    assert "more than 2 per request" in json.loads(handler(http_v2(json.dumps({"texts": ["a"] * 3})))["body"])["error"]
    assert "more than 10" in json.loads(handler(http_v2(json.dumps({"text": "x" * 11})))["body"])["error"]
    monkeypatch.setenv("SPLADERUNNER_MAX_TEXTS", "many")  # the configuration's fault: a 500, not the client's
    assert handler(http_v2(json.dumps({"text": "a"})))["statusCode"] == 500


def test_an_internal_error_is_a_500_without_details_and_is_logged(monkeypatch, tmp_path, caplog):
    monkeypatch.setattr(serverless, "_expander", None)
    monkeypatch.setenv("SPLADERUNNER_MODEL", str(tmp_path / "missing-model"))
    with caplog.at_level(logging.ERROR, logger="spladerunner"):
        response = handler(function_url(json.dumps({"text": "a"})), CONTEXT)
    assert response["statusCode"] == 500
    body = response["body"]
    expected = f"internal error; see the function's log (request id {CONTEXT.aws_request_id})"
    assert json.loads(body) == {"error": expected}
    assert "missing-model" not in body and "Traceback" not in body
    assert "missing-model" in caplog.text and "Traceback" in caplog.text
    with pytest.raises(InternalError, match="see the function's log") as raised:
        handler({"text": "a"}, CONTEXT)
    assert raised.value.__cause__ is None and raised.value.__suppress_context__


def test_an_answer_over_the_response_limit_is_refused_with_how_to_page(monkeypatch):
    answer_size = len(json.dumps(json.dumps(handler({"texts": TEXTS * 4}))))
    monkeypatch.setattr(serverless, "RESPONSE_LIMIT", answer_size // 2)
    response = handler(http_v2(json.dumps({"texts": TEXTS * 4})))
    assert response["statusCode"] == 413
    message = json.loads(response["body"])["error"]
    assert "over Lambda's" in message and "send fewer texts per request (about 3 of these 8 would fit)" in message
    assert handler(http_v2(json.dumps({"texts": TEXTS * 4 + [""]})))["statusCode"] == 413
    assert handler(http_v2(json.dumps({"texts": (TEXTS * 4)[:3]})))["statusCode"] == 200  # the advice holds
    with pytest.raises(PayloadTooLarge):
        handler({"texts": TEXTS * 4})


def test_the_model_loads_once_across_threads(monkeypatch):
    monkeypatch.setattr(serverless, "_expander", None)
    seen = []
    threads = [threading.Thread(target=lambda: seen.append(serverless.expander())) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(seen) == 4 and all(expander is seen[0] for expander in seen)
