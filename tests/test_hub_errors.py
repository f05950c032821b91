"""Hub ids without the hub: fast, distinct, honest errors, and cached models that load with the network down.

No mocks of the network stack: huggingface_hub runs in a subprocess against local sockets named by
HF_ENDPOINT (a closed port: connection refused; a server that accepts and never answers: the timeout
path; a server answering like the hub for a missing repository), and the cache is a real HF cache layout.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from hf_cache import populate_hf_cache
from paths import REPO

from spladerunner import ModelNotFoundError
from spladerunner.loading import looks_like_path, open_source

# Prints the outcome of loading each model named on the command line as one JSON line.
LOAD = """
import json, sys, time
from spladerunner import Expander
for name in sys.argv[1:]:
    start = time.monotonic()
    try:
        expander = Expander(name)
        outcome = {"loaded": expander.graph("document").output, "terms": len(expander.expand("seasons"))}
    except Exception as exc:
        outcome = {"error": type(exc).__name__, "message": str(exc)}
    print(json.dumps({"name": name, "seconds": time.monotonic() - start, **outcome}))
"""


def load(names: list[str], cache: Path, **env: str) -> list[dict]:
    """Each name's outcome; the environment is ours minus HF settings, plus `env`."""
    base = {k: v for k, v in os.environ.items() if not k.startswith("HF_")}
    result = subprocess.run([sys.executable, "-c", LOAD, *names], capture_output=True, text=True, timeout=120,
                            cwd=cache.parent, env={**base, "HF_HUB_CACHE": str(cache), "PYTHONPATH": str(REPO), **env})
    assert result.returncode == 0, result.stderr
    return [json.loads(line) for line in result.stdout.splitlines()]


class BlackHole:
    """A TCP server that accepts connections and never answers; counts the connections."""

    def __init__(self) -> None:
        self.socket = socket.create_server(("127.0.0.1", 0))
        self.connections: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                self.connections.append(self.socket.accept()[0])
            except OSError:
                return

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.socket.getsockname()[1]}"

    def close(self) -> None:
        for connection in self.connections:
            connection.close()
        self.socket.close()


@pytest.fixture
def black_hole() -> Iterator[BlackHole]:
    server = BlackHole()
    yield server
    server.close()


class MissingRepoHandler(BaseHTTPRequestHandler):
    """Answers every request as the hub does for a repository that does not exist."""

    def _answer(self) -> None:
        body = b'{"error": "Repository not found"}'
        self.send_response(401)
        self.send_header("X-Error-Code", "RepoNotFound")
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    do_GET = do_HEAD = _answer

    def log_message(self, *args) -> None:
        pass


def closed_port() -> str:
    with socket.create_server(("127.0.0.1", 0)) as probe:
        port = probe.getsockname()[1]
    return f"http://127.0.0.1:{port}"  # nothing listens there once the socket is closed: connection refused


def test_an_unreachable_hub_fails_within_seconds_and_says_why(tmp_path, black_hole):
    cache = tmp_path / "hub"
    [refused] = load(["acme/not-cached"], cache, HF_ENDPOINT=closed_port())
    [silent] = load(["acme/not-cached"], cache, HF_ENDPOINT=black_hole.url)
    assert "Connection refused" in refused["message"]
    assert "no answer within 5 s" in silent["message"] and len(black_hole.connections) == 1  # asked once
    for outcome in (refused, silent):
        assert outcome["error"] == "HubUnreachableError", outcome
        assert outcome["seconds"] < 10, outcome  # huggingface_hub's own retries took ~70 s
        message = outcome["message"]
        assert "could not be reached" in message and str(cache) in message and "models--acme--not-cached" in message
        assert "HF_HUB_OFFLINE=1" in message and 'Expander("splade-tiny")' in message
        assert f"no local folder {tmp_path / 'acme' / 'not-cached'}" in message
        assert "\n" not in message


def test_a_model_missing_from_a_reachable_hub_is_not_called_a_network_failure(tmp_path):
    server = ThreadingHTTPServer(("127.0.0.1", 0), MissingRepoHandler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        [outcome] = load(["acme/no-such-model"], tmp_path / "hub", HF_ENDPOINT=f"http://127.0.0.1:{server.server_port}")
    finally:
        server.shutdown()
    assert outcome["error"] == "NotOnHubError", outcome
    assert "no such model on the hub" in outcome["message"] and "could not be reached" not in outcome["message"]
    assert outcome["seconds"] < 10


def test_offline_mode_and_not_cached(tmp_path):
    [outcome] = load(["acme/not-cached"], tmp_path / "hub", HF_HUB_OFFLINE="1")
    assert outcome["error"] == "NotCachedOfflineError", outcome
    assert "HF_HUB_OFFLINE is set" in outcome["message"] and str(tmp_path / "hub") in outcome["message"]
    assert 'Expander("splade-tiny")' in outcome["message"]


def test_cached_models_load_with_the_hub_unreachable_without_asking_it(tmp_path, black_hole, tiny_bert_export,
                                                                       foreign_logits_folder):
    """No HF_HUB_OFFLINE: the cache answers alone, so not one connection is made and no timeout is waited."""
    cache = tmp_path / "hub"
    populate_hf_cache(cache, "acme/tiny-splade", tiny_bert_export)
    populate_hf_cache(cache, "acme/foreign", foreign_logits_folder)
    ours, foreign = load(["acme/tiny-splade", "acme/foreign"], cache, HF_ENDPOINT=black_hole.url)
    assert ours["loaded"] == "pooled" and foreign["loaded"] == "logits", (ours, foreign)
    assert ours["terms"] > 0 and foreign["terms"] > 0
    assert black_hole.connections == []
    snapshot = populate_hf_cache(cache, "acme/partial", tiny_bert_export)
    (snapshot / "model_int8.onnx").unlink()  # the default precision's graph was never fetched
    [partial] = load(["acme/partial"], cache, HF_ENDPOINT=closed_port())
    assert partial["error"] == "HubUnreachableError" and f"the cached snapshot {snapshot} lacks" in partial["message"]


@pytest.mark.parametrize("name", ["./acme/model", "../model", "/no/such/model", "~/no-such-model", "a/b/c",
                                  "model.onnx", "acme/model.onnx", "acme/model/"])
def test_paths_that_do_not_exist_are_never_taken_for_hub_ids(name, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert looks_like_path(name)
    with pytest.raises(ModelNotFoundError, match="no such folder"):
        open_source(name)


def test_a_bare_org_name_is_a_hub_id_unless_a_folder_has_that_name(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert not open_source("acme/model").is_local
    (tmp_path / "acme" / "model").mkdir(parents=True)
    assert open_source("acme/model").is_local
    with pytest.raises(ModelNotFoundError, match="not a hub id"):
        open_source("acme/bad name")


def test_the_probe_is_one_request_with_a_short_timeout(tmp_path, black_hole):
    """HF_HUB_ETAG_TIMEOUT shortens (or lengthens) the one probe, as it does huggingface_hub's metadata calls."""
    start = time.monotonic()
    [outcome] = load(["acme/not-cached"], tmp_path / "hub", HF_ENDPOINT=black_hole.url, HF_HUB_ETAG_TIMEOUT="1")
    assert outcome["error"] == "HubUnreachableError" and "no answer within 1 s" in outcome["message"]
    assert time.monotonic() - start < 6
