"""Build an AWS Lambda deployment package (a zip): the runtime's wheels for Lambda's platform, spladerunner,
one model folder and an entry module, without what serving never imports; checked against Lambda's limits.

Lambda unpacks the zip into /var/task, puts it on `sys.path` and calls `lambda_function.lambda_handler`
(the entry this module writes: it names the bundled model and precision, then hands over to
`spladerunner.serverless.handler`). huggingface-hub is left out: a bundled model is a local folder, and
the runtime imports the Hub client only for Hub ids.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

from .errors import InputError
from .loading import BUILTIN_MODELS
from .manifest import MANIFEST_NAME
from .serverless import MODEL_ENV, PRECISION_ENV

# What `spladerunner.serverless` imports when serving a bundled model (`import spladerunner` and an
# Expander on a local folder never import huggingface_hub).
DEPENDENCIES = ("numpy", "onnxruntime", "tokenizers")
ARCHES = {"x86_64": "x86_64", "arm64": "aarch64"}
# Lambda's Python runtimes on Amazon Linux 2023 (glibc 2.34). python3.10 and 3.11 run on Amazon Linux 2
# (glibc 2.26), where no onnxruntime wheel since 1.16 loads (they need glibc 2.27 or later).
PYTHONS = ("3.12", "3.13", "3.14")
LAMBDA_GLIBC = (2, 34)
# Lambda's limits: the unzipped package (code and layers) and a zip uploaded directly (larger ones go via S3).
UNZIPPED_LIMIT = 262_144_000
DIRECT_UPLOAD_LIMIT = 50 * 1024 * 1024
ENTRY_MODULE = "lambda_function"
HANDLER = f"{ENTRY_MODULE}.lambda_handler"
MODEL_FOLDER = "model"  # where a model other than the built-in one goes, beside the entry module
# Never imported when serving; paths relative to the package root (glob patterns), each with its reason.
PRUNED = (
    "bin",  # console scripts (f2py, numpy-config)
    "**/__pycache__",  # compiled for the build machine's Python (bytecode for the target's is compiled below)
    "*.dist-info/RECORD",  # lists files removed here; the rest of the metadata stays valid
    "**/*.pyi",  # type stubs
    "**/tests",
    "onnxruntime/transformers",  # onnxruntime's model-optimisation tooling
    "onnxruntime/quantization",
    "onnxruntime/tools",
    "onnxruntime/backend",  # the ONNX backend API (imports onnx)
    "onnxruntime/datasets",
    "onnxruntime/capi/libonnxruntime.so*",  # the C API library: the Python binding links its own copy
    "numpy/f2py",  # numpy's build and test tooling; its other subpackages stay, since numpy's own functions
    "numpy/testing",  # import them lazily (np.unique imports numpy.ma)
    "numpy/_pyinstaller",
    "numpy/_core/include",  # C headers and static libraries for building extensions
    "numpy/_core/lib",
    "numpy/_core/_simd.*",  # SIMD dispatch tests only
    "tokenizers/tools",  # the notebook visualiser
)
SPLADERUNNER_LEFT_OUT = ("__pycache__", "cli", "__main__.py", "lambda_package.py")


def megabytes(size: int) -> str:
    """Bytes as Lambda's limits count them (1 MB = 2**20 bytes: 250 MB unzipped is 262,144,000 bytes)."""
    return f"{size / 2**20:.1f} MB"


@dataclass
class PackageReport:
    """What was built: sizes in bytes, the largest parts, and the limits it came near."""

    output: Path
    handler: str
    model: str
    precision: str
    python: str
    arch: str
    versions: dict[str, str]
    unzipped: int
    zipped: int
    parts: list[tuple[str, int]] = field(default_factory=list)  # (folder, unzipped bytes), largest first
    warnings: list[str] = field(default_factory=list)


def platforms(arch: str, glibc: tuple[int, int] = LAMBDA_GLIBC) -> list[str]:
    """pip platform tags of the wheels a glibc loads: manylinux_2_17 (manylinux2014) up to its version."""
    return [f"manylinux_2_{minor}_{ARCHES[arch]}" for minor in range(glibc[1], 16, -1)]


def pinned_dependencies() -> list[str]:
    """The runtime's dependencies at the versions installed here (the ones the tests ran against)."""
    pins = []
    for name in DEPENDENCIES:
        try:
            pins.append(f"{name}=={version(name)}")
        except PackageNotFoundError:
            raise InputError(f"{name} is not installed here: the package pins the versions this machine runs") from None
    return pins


def build_package(model: str, output: str | Path, *, python: str = "3.12", arch: str = "x86_64",
                  precision: str | None = None, glibc: tuple[int, int] | None = None,
                  compile_with: str | None = None, image: bool = False,
                  log: Callable[[str], None] = lambda line: None) -> PackageReport:
    """Build the zip at `output` (written whole or not at all) and return its report.

    model: a built-in name, a local model folder, or a Hub id already in the Hugging Face cache, in each
        case a spladerunner export (`spladerunner.json`; convert foreign graphs first). It is loaded once
        here, so a package is never built around a model that does not load.
    precision: the one precision shipped (default: the one the Expander picks on CPU).
    glibc: build for another Linux than Lambda's (any Python then), e.g. this machine's to test the package here.
    compile_with: a Python `python` to precompile the bytecode with (default: this interpreter or
        `python3.X` on PATH when one is that version). Lambda's /var/task is read-only, so without it every
        cold start compiles each module it imports (about doubling the cold start: RESULTS-serverless.md).
    image: the zip goes into a container image (deploy/lambda/Dockerfile), where Lambda's zip limits do not
        apply (an image may hold 10 GB).
    Raises `InputError` for a Python Lambda cannot run the runtime on, an unknown architecture, a model that
    is not an export, a package over Lambda's 250 MB unzipped limit, and pip's error when a wheel is missing.
    """
    if glibc is None and python not in PYTHONS:
        raise InputError(f"python must be one of {list(PYTHONS)}, got {python!r}: Lambda runs python3.10 and "
                         "3.11 on Amazon Linux 2 (glibc 2.26), where no onnxruntime wheel since 1.16 loads")
    if arch not in ARCHES:
        raise InputError(f"arch must be one of {list(ARCHES)}, got {arch!r}")
    from .expander import Expander

    expander = Expander(model, precision=precision)
    source = expander.source
    if "foreign_graph" in expander.manifest.source:
        raise InputError(f"{source.name}: a foreign logits graph without {MANIFEST_NAME}; convert it first "
                         "(spladerunner-export upgrade FOLDER OUT) and package the converted folder")
    builtin = isinstance(model, str) and model in BUILTIN_MODELS
    folder = source.fetch(MANIFEST_NAME).parent
    files = {MANIFEST_NAME, expander.manifest.tokenizer} | {expander.graph(mode).path for mode in ("query", "document")}
    files |= {p.name for p in folder.glob("LICENSE*")}
    output = Path(output)
    pins = pinned_dependencies()
    compiler = bytecode_compiler(python, compile_with)
    with tempfile.TemporaryDirectory(prefix="spladerunner-lambda-") as staging_name:
        staging = Path(staging_name)
        log(f"installing {' '.join(pins)} for Python {python} on {arch} (manylinux)")
        _pip_install(staging, pins, python, platforms(arch, glibc or LAMBDA_GLIBC))
        package = Path(__file__).resolve().parent
        shutil.copytree(package, staging / "spladerunner", ignore=shutil.ignore_patterns(*SPLADERUNNER_LEFT_OUT))
        if not builtin:  # the built-in model rides along only when it is the one served
            shutil.rmtree(staging / "spladerunner" / "builtin")
            for name in sorted(files):
                target = staging / MODEL_FOLDER / name
                target.parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(folder / name, target)
        _prune(staging)
        (staging / f"{ENTRY_MODULE}.py").write_text(
            _entry(model if builtin else MODEL_FOLDER, expander.precision, builtin), encoding="utf-8")
        if compiler is not None:
            _compile(staging, compiler)
        sizes = {path: path.stat().st_size for path in staging.rglob("*") if path.is_file()}
        unzipped = sum(sizes.values())
        parts = _parts(staging, sizes)
        if not image:
            check_size(unzipped, parts)
        _write_zip(staging, sorted(sizes, key=lambda path: path.relative_to(staging).as_posix()), output)
    report = PackageReport(output, HANDLER, source.name, expander.precision, python, arch,
                           dict(pin.split("==") for pin in pins), unzipped, output.stat().st_size, parts)
    if compiler is None:
        report.warnings.append(f"no Python {python} here to precompile the bytecode with (--compile-with PATH): "
                               "Lambda will compile every module it imports at each cold start")
    if report.zipped > DIRECT_UPLOAD_LIMIT and not image:
        report.warnings.append(f"{megabytes(report.zipped)} zipped is over the {megabytes(DIRECT_UPLOAD_LIMIT)} "
                               "of a direct upload: upload it to S3 and deploy from there (README: Serverless)")
    return report


def check_size(unzipped: int, parts: list[tuple[str, int]]) -> None:
    """Refuse a package over Lambda's unzipped limit, naming its largest parts."""
    if unzipped > UNZIPPED_LIMIT:
        biggest = ", ".join(f"{name} {megabytes(size)}" for name, size in parts[:5])
        raise InputError(f"the package would be {megabytes(unzipped)} unzipped, over Lambda's "
                         f"{megabytes(UNZIPPED_LIMIT)} limit (largest: {biggest}); ship int8 "
                         "(--precision int8) or a smaller model, or build it for a container image (--image)")


def bytecode_compiler(python: str, compile_with: str | None = None) -> str | None:
    """An interpreter of version `python` to compile bytecode with: `compile_with` (refused if another
    version), else this one or `python3.X` on PATH if either is that version, else None."""
    candidates = [compile_with] if compile_with else [sys.executable, shutil.which(f"python{python}")]
    for candidate in filter(None, candidates):
        try:
            found = subprocess.run([candidate, "-c", "import sys; print('%d.%d' % sys.version_info[:2])"],
                                   capture_output=True, text=True, timeout=60).stdout.strip()
        except OSError:
            found = None
        if found == python:
            return candidate
        if compile_with:
            raise InputError(f"--compile-with {compile_with}: Python {found or '(does not run)'}, not {python}")
    return None


def _compile(staging: Path, compiler: str) -> None:
    """Bytecode beside every module, checked by nothing at run time (`unchecked-hash`): the package is
    read-only on Lambda, and the sources' timestamps are not kept in the zip."""
    done = subprocess.run([compiler, "-m", "compileall", "-q", "-j", "0", "--invalidation-mode", "unchecked-hash",
                           str(staging)], capture_output=True, text=True)
    if done.returncode != 0:
        raise InputError(f"{compiler} -m compileall failed:\n{(done.stdout + done.stderr)[-2000:]}")


def _pip_install(staging: Path, pins: list[str], python: str, tags: list[str]) -> None:
    command = [sys.executable, "-m", "pip", "install", "--quiet", "--target", str(staging), "--no-deps",
               "--no-compile", "--only-binary=:all:", "--implementation", "cp", "--python-version", python,
               *(arg for tag in tags for arg in ("--platform", tag)), *pins]
    done = subprocess.run(command, capture_output=True, text=True, env={**os.environ, "PIP_NO_INPUT": "1"})
    if done.returncode != 0:
        tail = "\n".join(done.stderr.strip().splitlines()[-6:])
        raise InputError(f"pip could not install {' '.join(pins)} for Python {python} ({tags[0]}):\n{tail}")


def _prune(staging: Path) -> None:
    for pattern in PRUNED:
        for path in sorted(staging.glob(pattern), reverse=True):  # deepest first
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path)
            elif path.exists() or path.is_symlink():
                path.unlink()


def _entry(model: str, precision: str, builtin: bool) -> str:
    where = (repr(model) if builtin
             else f"os.path.join(os.path.dirname(os.path.abspath(__file__)), {model!r})")
    return (
        '"""Lambda entry written by `spladerunner lambda-package`: the bundled model and precision, unless the\n'
        f'function\'s environment sets {MODEL_ENV} / {PRECISION_ENV}."""\n\n'
        "import os\n\n"
        f"os.environ.setdefault({MODEL_ENV!r}, {where})\n"
        f"os.environ.setdefault({PRECISION_ENV!r}, {precision!r})\n\n"
        "from spladerunner.serverless import handler as lambda_handler  # noqa: E402\n\n"
        '__all__ = ["lambda_handler"]\n'
    )


def _parts(staging: Path, sizes: dict[Path, int]) -> list[tuple[str, int]]:
    """Unzipped bytes per folder two levels deep (`onnxruntime/capi`, `numpy.libs`, `model`), largest first."""
    totals: Counter[str] = Counter()
    for path, size in sizes.items():
        parts = path.relative_to(staging).parts
        totals["/".join(parts[:2]) if len(parts) > 2 else parts[0] if len(parts) > 1 else "(top level)"] += size
    return totals.most_common()


def _write_zip(staging: Path, paths: list[Path], output: Path) -> None:
    """A reproducible zip (fixed timestamps, sorted entries), renamed into place when complete. Lambda runs
    the code as another user than the one who built it: every entry is world-readable."""
    output.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(prefix=output.name, suffix=".tmp", dir=output.parent)
    os.close(handle)
    try:
        with zipfile.ZipFile(temporary, "w", zipfile.ZIP_DEFLATED) as archive:
            for path in paths:
                info = zipfile.ZipInfo(path.relative_to(staging).as_posix(), date_time=(1980, 1, 1, 0, 0, 0))
                mode = 0o755 if path.stat().st_mode & 0o111 else 0o644
                info.external_attr = (0o100000 | mode) << 16
                archive.writestr(info, path.read_bytes(), compress_type=zipfile.ZIP_DEFLATED, compresslevel=9)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(temporary, 0o666 & ~umask)  # mkstemp's 0600 would hide the package from other users
        os.replace(temporary, output)
    except BaseException:
        os.unlink(temporary)
        raise
