"""Hostile task configs, data and operator mistakes: nothing executes, nothing hangs, nothing tracebacks."""

import json
import textwrap
from pathlib import Path

import pytest

from conftest import cli
from selfconsistency.tasks import DataError, get_task


def write(path: Path, text: str) -> Path:
    path.write_text(textwrap.dedent(text).lstrip(), encoding="utf-8")
    return path


def one_line_error(proc, *needles: str) -> str:
    """The CLI failed as a user error: exit 2, one line on stderr, no traceback."""
    assert proc.returncode == 2, (proc.returncode, proc.stderr)
    assert "Traceback" not in proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:"), proc.stderr
    for needle in needles:
        assert needle in lines[0], lines[0]
    return lines[0]


GSM_LINE = json.dumps({"question": "What is 2+3?", "answer": "#### 5"}) + "\n"


# -- 1. sandboxed templates ------------------------------------------------------------------------

ESCAPE = "{{ cycler.__init__.__globals__.os.system('touch pwned') }}"


@pytest.mark.parametrize("command", ["tasks show", "run"])
def test_a_template_cannot_run_code(tmp_path, command):
    config = write(tmp_path / "evil.yaml", f"""
        name: evil
        prompt:
          template: "{ESCAPE}{{{{ question }}}}"
          exemplars: [{{question: "What is 1+1?", rationale: "The answer is 2."}}]
    """)
    data = tmp_path / "data.jsonl"
    data.write_text(GSM_LINE)
    args = ["tasks", "show", str(config)] if command == "tasks show" else \
        ["run", str(config), "--data", str(data), "--run-dir", str(tmp_path / "run"), "--quiet"]
    proc = cli(*args, cwd=tmp_path, timeout=60)
    one_line_error(proc, "sandbox")
    assert not (tmp_path / "pwned").exists()
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("template, message", [
    ("{{ 1/0 }}", "ZeroDivisionError"),
    ("{{ 9**(9**9) }}", "too large"),
    ("{{ 'x' * 10**12 }}", "too long"),
    ("{{ record.items().__iter__ }}", "unsafe"),
    ("{% set _ = record.update({'question': 'x'}) %}{{ question }}", "unsafe"),
])
def test_a_template_that_raises_or_explodes_is_a_one_line_error(tmp_path, template, message):
    config = write(tmp_path / "bad.yaml", f"""
        name: bad
        prompt:
          template: {json.dumps(template)}
    """)
    data = tmp_path / "data.jsonl"
    data.write_text(GSM_LINE)
    proc = cli("run", str(config), "--data", str(data), "--run-dir", str(tmp_path / "run"), "--quiet",
               timeout=60)
    one_line_error(proc, f"{data}:1", message)
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("statement", ["{answer.__class__} is it", "The answer is {answer:>999999999}.",
                                       "The answer is {answer} or {other}.", "no field at all"])
def test_answer_statement_holds_only_the_answer_field(tmp_path, statement):
    config = write(tmp_path / "stmt.yaml", f"""
        name: stmt
        prompt:
          answer_statement: {json.dumps(statement)}
    """)
    with pytest.raises(DataError, match="answer_statement"):
        get_task(str(config))
