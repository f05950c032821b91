"""`spladerunner lambda-package`, and the package served as Lambda serves it.

The package is built for this machine (x86_64, this Python) with the real pip against the package index
(pip's cache keeps reruns quick), unzipped into an empty read-only folder and run by AWS's runtime
interface client (`awslambdaric`, installed beside it as Lambda's runtime lives beside /var/task) from
`python -S` (no site-packages) with PYTHONPATH on those two folders only and HOME unwritable. Root ignores
read-only permissions, so each run also checks that the package folder is unchanged afterwards (bytecode
writes are switched off as Lambda's read-only file system refuses them). The client polls a local server
speaking the documented Lambda Runtime API (`/2018-06-01/runtime/invocation/next`, `.../{id}/response`,
`.../{id}/error`).
"""

from __future__ import annotations

import contextlib
import json
import os
import queue
import re
import shutil
import stat
import subprocess
import sys
import tempfile
import threading
import zipfile
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from lambda_events import encoded, function_url, http_v2, rest_v1

from spladerunner import Expander
from spladerunner.cli import main
from spladerunner.errors import InputError
from spladerunner.lambda_package import (
    DIRECT_UPLOAD_LIMIT,
    HANDLER,
    UNZIPPED_LIMIT,
    build_package,
    check_size,
    platforms,
)
from spladerunner.serverless import BadRequest, handler

PYTHON = f"{sys.version_info.major}.{sys.version_info.minor}"
# Built for this machine's glibc and Python (Lambda's are checked by the command's own tests below).
HOST_GLIBC = tuple(int(part) for part in os.confstr("CS_GNU_LIBC_VERSION").split()[1].split(".")[:2])
RUNTIME_CLIENT = "awslambdaric==4.2.2"
# Nothing may write here (not even root): Lambda's file system is read-only outside /tmp.
UNWRITABLE_HOME = "/proc/spladerunner-home"

EVENTS = [
    {"texts": ["what is the capital of france", "Paris is the capital of France."], "query": True, "top_k": 5},
    {"text": "sparse retrieval on onnxruntime", "format": "ids"},
    rest_v1(json.dumps({"texts": ["hello world"], "top_k": 3})),
    http_v2(encoded({"text": "café"}), base64_encoded=True),
    function_url(json.dumps({"texts": ["a", 3]})),
    function_url(None, method="GET"),
    http_v2("{not json"),
    {"texts": "not a list"},
]


@pytest.fixture(scope="module")
def package(tmp_path_factory) -> tuple[Path, object]:
    """The built-in model's package for this machine's Python, built once."""
    output = tmp_path_factory.mktemp("lambda") / "function.zip"
    return output, build_package("splade-tiny", output, python=PYTHON, arch="x86_64", glibc=HOST_GLIBC)


@contextlib.contextmanager
def unpacked(package: Path) -> Iterator[Path]:
    """The zip unpacked into an empty world-readable, read-only folder (Lambda's /var/task)."""
    root = Path(tempfile.mkdtemp(prefix="lambda-task-"))
    os.chmod(root, 0o755)
    with zipfile.ZipFile(package) as archive:
        archive.extractall(root)
        for info in archive.infolist():
            os.chmod(root / info.filename, (info.external_attr >> 16) & 0o777)
    _read_only(root)
    try:
        yield root
    finally:
        _writable(root)
        shutil.rmtree(root)


@pytest.fixture(scope="module")
def task_root(package) -> Iterator[Path]:
    with unpacked(package[0]) as root:
        yield root


@pytest.fixture(scope="module")
def runtime_client(task_root) -> Iterator[Path]:
    """awslambdaric for this machine, in a folder of its own (Lambda's /var/runtime)."""
    folder = Path(tempfile.mkdtemp(prefix="lambda-runtime-"))
    subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--target", str(folder), "--only-binary=:all:",
                    "--no-compile", RUNTIME_CLIENT], check=True, capture_output=True)
    _read_only(folder)
    yield folder
    _writable(folder)
    shutil.rmtree(folder)


def _read_only(root: Path) -> None:
    for path in [root, *root.rglob("*")]:
        if not path.is_symlink():
            os.chmod(path, (path.stat().st_mode | 0o444 | (0o111 if path.is_dir() else 0)) & ~0o222)


def _writable(root: Path) -> None:
    for path in [root, *root.rglob("*")]:
        if not path.is_symlink():
            os.chmod(path, path.stat().st_mode | stat.S_IWUSR)


def lambda_environment(task_root: Path, *extra: Path) -> dict[str, str]:
    """A Lambda-like environment: nothing of this machine's Python, HOME unwritable, only /tmp writable."""
    return {"PYTHONPATH": os.pathsep.join(str(p) for p in (task_root, *extra)), "LAMBDA_TASK_ROOT": str(task_root),
            "HOME": UNWRITABLE_HOME, "PATH": "/usr/bin:/bin", "LANG": "en_US.UTF-8", "TZ": ":UTC",
            "AWS_LAMBDA_FUNCTION_NAME": "spladerunner-test", "AWS_LAMBDA_FUNCTION_MEMORY_SIZE": "1024",
            "AWS_REGION": "us-east-1", "PYTHONDONTWRITEBYTECODE": "1"}


def listing(root: Path) -> dict[str, tuple[int, int]]:
    """Every file and folder under `root` with its size and mtime: what a run must leave as it was."""
    return {str(p.relative_to(root)): (p.stat().st_size, p.stat().st_mtime_ns) for p in [root, *root.rglob("*")]}


def test_the_builtin_package_fits_a_direct_upload_and_leaves_out_what_serving_never_imports(package):
    output, report = package
    assert report.handler == HANDLER and report.precision == "int8" and report.model == "splade-tiny"
    assert report.unzipped < UNZIPPED_LIMIT and report.zipped == output.stat().st_size <= DIRECT_UPLOAD_LIMIT
    assert not report.warnings
    with zipfile.ZipFile(output) as archive:
        names = archive.namelist()
        modes = {(info.external_attr >> 16) & 0o444 for info in archive.infolist()}
    tops = {name.split("/")[0] for name in names}
    assert {"numpy", "onnxruntime", "tokenizers", "spladerunner", "lambda_function.py"} <= tops
    assert not {"huggingface_hub", "spladerunner_export", "export", "bin", "torch"} & tops
    assert not [n for n in names if "/tests/" in n or n.endswith((".pyi", "/RECORD"))]
    tag = sys.implementation.cache_tag  # bytecode for the target's Python, beside every module
    expected = {f"{folder}__pycache__/{stem}.{tag}.pyc" for folder, stem in
                (re.fullmatch(r"(.*/)?([^/]+)\.py", n).groups("") for n in names if n.endswith(".py"))}
    assert {n for n in names if n.endswith(".pyc")} == expected
    assert f"spladerunner/__pycache__/serverless.{tag}.pyc" in names
    assert not [n for n in names if n.startswith(("onnxruntime/transformers", "onnxruntime/quantization",
                                                  "onnxruntime/tools", "spladerunner/cli/", "numpy/f2py"))]
    assert "spladerunner/builtin/splade-tiny/model_int8.onnx" in names
    assert modes == {0o444}  # world-readable: Lambda runs the code as another user
    assert names == sorted(names)


def serve_fresh(task_root: Path, request: dict) -> dict:
    """`python -S`, PYTHONPATH = the unpacked package only: the entry's answer, and the modules it imported."""
    script = ("import json, sys\n"
              "from lambda_function import lambda_handler\n"
              f"answer = lambda_handler({request!r}, None)\n"
              "third = sorted({m.split('.')[0] for m in sys.modules} - set(sys.stdlib_module_names))\n"
              "print(json.dumps({'answer': answer, 'modules': third, 'path': sys.path}))\n")
    before = listing(task_root)
    done = subprocess.run([sys.executable, "-S", "-c", script], env=lambda_environment(task_root), cwd=task_root,
                          capture_output=True, text=True, timeout=120)
    assert listing(task_root) == before
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert not [p for p in result["path"] if "site-packages" in p]
    return result


def test_a_fresh_interpreter_serves_from_the_package_alone_without_the_hub_client(task_root):
    result = serve_fresh(task_root, {"texts": ["hello world"], "top_k": 3})
    assert result["answer"] == handler({"texts": ["hello world"], "top_k": 3})
    assert result["modules"] == ["__main__", "lambda_function", "numpy", "onnxruntime", "spladerunner", "tokenizers"]


def test_a_model_folder_ships_its_chosen_precision_alone(tiny_bert_export, tmp_path):
    """Another model goes to model/ with only the precision served; the entry names both."""
    report = build_package(str(tiny_bert_export), tmp_path / "f.zip", python=PYTHON, glibc=HOST_GLIBC,
                           precision="int8")
    with zipfile.ZipFile(report.output) as archive:
        names = archive.namelist()
    assert sorted(n for n in names if n.startswith("model/")) == [
        "model/model_int8.onnx", "model/spladerunner.json", "model/tokenizer.json"]
    assert not [n for n in names if n.startswith("spladerunner/builtin/")]
    request = {"text": "a query about proteins", "query": True, "format": "ids"}
    with unpacked(report.output) as root:
        answer = serve_fresh(root, request)["answer"]
    [expected] = Expander(tiny_bert_export, precision="int8").expand_batch(request["text"], query=True)
    assert answer["precision"] == "int8" and answer["model"].endswith("/model")
    assert answer["vectors"][0]["ids"] == expected.ids.tolist()
    assert answer["vectors"][0]["weights"] == expected.weights.tolist()


def test_a_package_over_lambdas_unzipped_limit_is_refused_naming_its_largest_parts(package):
    parts = package[1].parts
    check_size(UNZIPPED_LIMIT, parts)
    with pytest.raises(InputError, match=r"over Lambda's 250.0 MB limit \(largest: onnxruntime/capi .*\(--image\)"):
        check_size(UNZIPPED_LIMIT + 1, parts)


class RuntimeApi(BaseHTTPRequestHandler):
    """Lambda's Runtime API, as documented: hands out the queued events, records responses and errors."""

    protocol_version = "HTTP/1.1"
    events: queue.Queue
    results: dict[str, tuple[str, object]]
    done: threading.Event
    expected: int

    def log_message(self, *args) -> None:
        pass

    def _reply(self, code: int, body: bytes = b"", headers: dict[str, str] | None = None) -> None:
        self.send_response(code)
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self) -> None:
        assert self.path == "/2018-06-01/runtime/invocation/next", self.path
        request_id, event = self.events.get()  # blocks like Lambda until there is an event
        self._reply(200, json.dumps(event).encode(), {
            "Content-Type": "application/json", "Lambda-Runtime-Aws-Request-Id": request_id,
            "Lambda-Runtime-Deadline-Ms": "4102444800000",
            "Lambda-Runtime-Invoked-Function-Arn": "arn:aws:lambda:us-east-1:123456789012:function:spladerunner-test",
            "Lambda-Runtime-Trace-Id": "Root=1-5bef4de7-ad49b0e87f6ef6c87fc2e700;Parent=9a9197af755a6419;Sampled=1"})

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])) or b"null")
        parts = self.path.split("/")
        if parts[-2:] == ["init", "error"]:
            self.results["init"] = ("init-error", body)
        else:
            assert parts[:4] == ["", "2018-06-01", "runtime", "invocation"] and parts[-1] in ("response", "error")
            self.results[parts[4]] = (parts[-1], body)
        self._reply(202, b'{"status":"OK"}', {"Content-Type": "application/json"})
        if len(self.results) >= self.expected or "init" in self.results:
            self.done.set()


def test_awslambdaric_serves_documented_events_from_the_unpacked_package(task_root, runtime_client):
    before = listing(task_root)
    events: queue.Queue = queue.Queue()
    for number, event in enumerate(EVENTS):
        events.put((f"request-{number}", event))
    api = type("Api", (RuntimeApi,), {"events": events, "results": {}, "done": threading.Event(),
                                      "expected": len(EVENTS)})
    server = ThreadingHTTPServer(("127.0.0.1", 0), api)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    environment = {**lambda_environment(task_root, runtime_client),
                   "AWS_LAMBDA_RUNTIME_API": f"127.0.0.1:{server.server_address[1]}"}
    process = subprocess.Popen([sys.executable, "-S", "-m", "awslambdaric", HANDLER], env=environment,
                               cwd=task_root, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        finished = api.done.wait(timeout=120)
    finally:
        process.kill()
        log = process.communicate()[0]
        server.shutdown()
    assert finished and "init" not in api.results, log
    assert listing(task_root) == before
    results = [api.results[f"request-{number}"] for number in range(len(EVENTS))]
    for event, (kind, body) in zip(EVENTS[:4], results[:4]):
        assert kind == "response", log
        assert body == json.loads(json.dumps(handler(event))), event  # what the handler answers in-process
    assert results[2][1]["statusCode"] == 200 and results[3][1]["statusCode"] == 200
    for (kind, body), status, message in zip(results[4:7], (400, 405, 400),
                                             ("texts[1] is int", "method GET not allowed", "body is not valid JSON")):
        assert kind == "response" and body["statusCode"] == status and message in json.loads(body["body"])["error"]
    kind, error = results[7]
    assert kind == "error" and error["errorType"] == "BadRequest", error
    assert "texts must be a list of strings" in error["errorMessage"]
    with pytest.raises(BadRequest, match="texts must be a list of strings"):
        handler(EVENTS[7])


def test_platform_tags_are_amazon_linux_2023s():
    assert platforms("x86_64")[0] == "manylinux_2_34_x86_64"
    assert platforms("arm64")[0] == "manylinux_2_34_aarch64" and platforms("arm64")[-1] == "manylinux_2_17_aarch64"


@pytest.mark.parametrize(("argv", "message"), [
    (["--python", "3.11"], "Lambda runs python3.10 and 3.11 on Amazon Linux 2 (glibc 2.26)"),
    (["--arch", "ppc64le"], "invalid choice: 'ppc64le'"),
])
def test_the_command_refuses_what_lambda_does_not_run(tmp_path, capsys, argv, message):
    with contextlib.suppress(SystemExit):  # argparse's own refusal, or our error line and exit status 1
        assert main(["lambda-package", "-o", str(tmp_path / "f.zip"), *argv]) == 1
    assert message in capsys.readouterr().err
    assert not list(tmp_path.iterdir())


def test_a_folder_that_is_not_a_model_is_refused_before_anything_is_built(tmp_path, capsys):
    assert main(["lambda-package", "--model", str(tmp_path), "-o", str(tmp_path / "f.zip")]) == 1
    assert "spladerunner.json is missing" in capsys.readouterr().err
    assert not (tmp_path / "f.zip").exists()


def test_a_foreign_logits_graph_must_be_converted_first(foreign_logits_folder, tmp_path):
    with pytest.raises(InputError, match="convert it first"):
        build_package(str(foreign_logits_folder), tmp_path / "f.zip", python="3.12")
    assert not (tmp_path / "f.zip").exists()
