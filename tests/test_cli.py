"""`spladerunner expand` as a user runs it: a real subprocess, real files; and what every command shares."""

from __future__ import annotations

import argparse
import json
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from spladerunner import Expander
from spladerunner.cli import BROKEN_PIPE_EXIT, build_parser


def run_cli(*args: str, stdin: str | None = None, cwd: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "spladerunner", *args], input=stdin, capture_output=True,
                          text=True, cwd=cwd)


def test_expand_plain_lines_from_stdin(tiny_bert_export):
    result = run_cli("expand", "--model", str(tiny_bert_export), "--precision", "fp32", "--top-k", "5",
                     stdin="what causes the seasons\n\nwhy is the sky blue\n")
    assert result.returncode == 0, result.stderr
    rows = [json.loads(line) for line in result.stdout.splitlines()]
    assert [r["id"] for r in rows] == [0, 1, 2]
    expected = Expander(tiny_bert_export, precision="fp32").expand("why is the sky blue", top_k=5).to_dict()
    assert rows[2]["vector"].keys() == expected.keys()
    assert all(abs(rows[2]["vector"][k] - v) < 1e-6 for k, v in expected.items())
    assert all(len(r["vector"]) <= 5 and r["truncated"] is False for r in rows)


def test_expand_jsonl_with_ids_keys_and_progress(tiny_bert_export, tmp_path):
    corpus = tmp_path / "corpus.jsonl"
    corpus.write_text("\n".join(json.dumps({"_id": f"d{i}", "title": "Seasons", "text": "axis tilt " * i})
                                for i in range(1, 40)) + "\n")
    out = tmp_path / "vectors.jsonl"
    result = run_cli("expand", str(corpus), "-o", str(out), "--model", str(tiny_bert_export), "--query",
                     "--text-field", "title", "--text-field", "text", "--keys", "ids", "--max-length", "8",
                     "--progress")
    assert result.returncode == 0, result.stderr
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["id"] for r in rows] == [f"d{i}" for i in range(1, 40)]
    assert all(key.isdigit() for r in rows for key in r["vector"])
    assert rows[0]["truncated"] is False and rows[-1]["truncated"] is True
    assert "expanded: 39/39" in result.stderr and "were cut at the max length" in result.stderr


def test_expand_errors_are_one_line_messages(tiny_bert_export, tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"id": 1, "text": "ok"}\n{"id": 2, "body": "no text field"}\n')
    result = run_cli("expand", str(bad), "--model", str(tiny_bert_export))
    assert result.returncode != 0 and "bad.jsonl:2: no field 'text'" in result.stderr
    result = run_cli("expand", "--model", str(tmp_path / "missing-model"), stdin="x\n")
    assert result.returncode == 1 and "no such folder" in result.stderr and "Traceback" not in result.stderr


def test_expand_output_appears_only_when_complete(tiny_bert_export, tmp_path):
    """-o FILE is written under a temporary name and renamed at the end: a failed or interrupted run leaves
    an existing FILE as it was and no new or partial one."""
    out = tmp_path / "vectors.jsonl"
    out.write_text("previous run\n")
    bad = tmp_path / "bad.jsonl"
    bad.write_text("".join(json.dumps({"id": i, "text": f"text number {i}"}) + "\n" for i in range(600))
                   + '{"id": 600, "text": 1}\n')
    result = run_cli("expand", str(bad), "-o", str(out), "--model", str(tiny_bert_export))
    assert result.returncode == 1 and "bad.jsonl:601: field 'text' must be a string" in result.stderr
    assert out.read_text() == "previous run\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.jsonl", "vectors.jsonl"]

    fresh = tmp_path / "fresh.jsonl"
    many = tmp_path / "many.txt"
    many.write_text("the tilt of the axis causes the seasons\n" * 200_000)
    # SIGINT at its default in the child: a shell starts background jobs with SIGINT ignored, and Python then
    # installs no KeyboardInterrupt handler (a CI runner's job may be such a background job).
    process = subprocess.Popen([sys.executable, "-m", "spladerunner", "expand", str(many), "-o", str(fresh),
                                "--model", str(tiny_bert_export), "--progress"], stderr=subprocess.PIPE, text=True,
                               preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    assert "expanded:" in process.stderr.read(40)  # expansion has begun, the output is being written
    process.send_signal(signal.SIGINT)
    try:
        code = process.wait(timeout=60)
    except subprocess.TimeoutExpired:
        process.kill()
        pytest.fail(f"still running 60 s after SIGINT; its stderr: {process.communicate()[1][-2000:]!r}")
    assert code == 130
    assert not fresh.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.jsonl", "many.txt", "vectors.jsonl"]


def test_help_shows_every_default(capsys) -> None:
    """Every option with a default says it in --help, and a None default says what None means."""
    parser = build_parser()
    commands = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    assert set(commands.choices) == {"expand", "index", "search", "eval", "lambda-package"}
    checked = 0
    for name, command in {"spladerunner": parser, **commands.choices}.items():
        formatter = command._get_formatter()
        for action in command._actions:
            if isinstance(action, (argparse._HelpAction, argparse._SubParsersAction)) or action.required:
                continue  # nothing to default
            if action.nargs == 0 and action.default is False:
                continue  # a flag: off unless given
            text = formatter._expand_help(action)
            assert "(default: " in text and "default: None" not in text, (name, action.option_strings, text)
            checked += 1
        with pytest.raises(SystemExit) as exit_:
            command.parse_args(["--help"])
        assert exit_.value.code == 0
    assert checked >= 30
    shown = " ".join(capsys.readouterr().out.split())  # as wrapped to any terminal width
    assert "(default: ndcg@10 mrr@10 recall@100 map)" in shown and "(default: the model's max length" in shown


def test_a_closed_pipe_ends_quietly(tiny_bert_export, tmp_path):
    """`spladerunner expand ... | head -1`: the reader leaves after one line; the command stops with exit code
    141 (128 + SIGPIPE, like other tools cut off by a closed pipe) and nothing on stderr."""
    many = tmp_path / "many.txt"
    many.write_text("the tilt of the axis causes the seasons\n" * 3000)  # megabytes of JSONL: past any pipe buffer
    process = subprocess.Popen([sys.executable, "-m", "spladerunner", "expand", str(many),
                                "--model", str(tiny_bert_export)],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    first = process.stdout.readline()
    process.stdout.close()
    errors = process.stderr.read()
    assert process.wait(timeout=120) == BROKEN_PIPE_EXIT
    assert json.loads(first)["id"] == 0
    assert errors == ""  # no traceback, no "error:", no "Exception ignored ... BrokenPipeError"
