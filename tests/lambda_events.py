"""Lambda events as AWS documents them, carrying a given request body.

Shapes from the AWS docs: API Gateway REST proxy integration (payload 1.0, "Input format of a Lambda function
for proxy integration"), HTTP API payload 2.0 ("Create AWS Lambda proxy integrations for HTTP APIs") and
Function URLs ("Invoking Lambda function URLs": the 2.0 format with `$default` route and stage; bodies
other than JSON or text arrive base64-encoded).
"""

from __future__ import annotations

import base64
import json
from typing import Any


def rest_v1(body: str | None, *, method: str = "POST", base64_encoded: bool = False) -> dict[str, Any]:
    return {
        "version": "1.0",
        "resource": "/expand",
        "path": "/expand",
        "httpMethod": method,
        "headers": {"content-type": "application/json", "Host": "id.execute-api.us-east-1.amazonaws.com"},
        "multiValueHeaders": {"content-type": ["application/json"],
                              "Host": ["id.execute-api.us-east-1.amazonaws.com"]},
        "queryStringParameters": None,
        "multiValueQueryStringParameters": None,
        "requestContext": {
            "accountId": "123456789012",
            "apiId": "id",
            "authorizer": {"claims": None, "scopes": None},
            "domainName": "id.execute-api.us-east-1.amazonaws.com",
            "domainPrefix": "id",
            "extendedRequestId": "request-id",
            "httpMethod": method,
            "identity": {"accessKey": None, "accountId": None, "caller": None, "cognitoAuthenticationProvider": None,
                         "cognitoAuthenticationType": None, "cognitoIdentityId": None, "cognitoIdentityPoolId": None,
                         "principalOrgId": None, "sourceIp": "192.0.2.1", "user": None, "userAgent": "curl/8.5.0",
                         "userArn": None},
            "path": "/prod/expand",
            "protocol": "HTTP/1.1",
            "requestId": "c6af9ac6-7b61-11e6-9a41-93e8deadbeef",
            "requestTime": "04/Mar/2020:19:15:17 +0000",
            "requestTimeEpoch": 1583349317135,
            "resourceId": None,
            "resourcePath": "/expand",
            "stage": "prod",
        },
        "pathParameters": None,
        "stageVariables": None,
        "body": body,
        "isBase64Encoded": base64_encoded,
    }


def http_v2(body: str | None, *, method: str = "POST", base64_encoded: bool = False,
            function_url: bool = False) -> dict[str, Any]:
    domain = "abcdefg.lambda-url.us-east-1.on.aws" if function_url else "id.execute-api.us-east-1.amazonaws.com"
    route = "$default" if function_url else "POST /expand"
    event = {
        "version": "2.0",
        "routeKey": route,
        "rawPath": "/" if function_url else "/expand",
        "rawQueryString": "",
        "headers": {"content-type": "application/json", "host": domain, "x-forwarded-proto": "https",
                    "x-forwarded-port": "443", "user-agent": "curl/8.5.0"},
        "requestContext": {
            "accountId": "anonymous" if function_url else "123456789012",
            "apiId": "abcdefg" if function_url else "api-id",
            "domainName": domain,
            "domainPrefix": domain.split(".")[0],
            "http": {"method": method, "path": "/" if function_url else "/expand", "protocol": "HTTP/1.1",
                     "sourceIp": "192.0.2.1", "userAgent": "curl/8.5.0"},
            "requestId": "84545120-9bda-41af-9b45-6bd9fb4503a6",
            "routeKey": route,
            "stage": "$default",
            "time": "10/Apr/2022:13:30:05 +0000",
            "timeEpoch": 1649597405529,
        },
        "isBase64Encoded": base64_encoded,
    }
    if body is not None:  # a request without a body has no `body` key in payload 2.0
        event["body"] = body
    return event


def function_url(body: str | None, **kwargs: Any) -> dict[str, Any]:
    return http_v2(body, function_url=True, **kwargs)


def encoded(request: Any) -> str:
    """A request as a base64 body (what Function URLs send for non-text content types)."""
    return base64.b64encode(json.dumps(request).encode()).decode()
