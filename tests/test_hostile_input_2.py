"""Hostile input, second round: what a review of the first round's fixes still got through."""

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


# -- golds with a plus sign ------------------------------------------------------------------------

@pytest.mark.parametrize("gold, canonical", [("#### +5", "5"), ("#### +$1,000", "1000"), ("#### + 0.75", "3/4")])
def test_a_leading_plus_sign_is_part_of_a_numeric_gold(tmp_path, gold, canonical):
    data = tmp_path / "golds.jsonl"
    data.write_text(json.dumps({"question": "q", "answer": gold}) + "\n")
    assert get_task("gsm8k").load(data).questions[0].gold == canonical


@pytest.mark.parametrize("gold", ["#### +-5", "#### ++5", "#### +"])
def test_signs_that_are_no_number_stay_refused(tmp_path, gold):
    data = tmp_path / "golds.jsonl"
    data.write_text(json.dumps({"question": "q", "answer": gold}) + "\n")
    with pytest.raises(DataError, match="golds.jsonl:1: .*is not a number"):
        get_task("gsm8k").load(data)


# -- regexes that never finish compiling ------------------------------------------------------------

@pytest.mark.timeout(60)
@pytest.mark.parametrize("role, pattern", [
    ("pattern", "(a{60000}){60000}"),
    ("pattern", "(a{4294967294})"),
    ("gold_pattern", "((a{1000}){1000}){1000}"),
    ("gold_pattern", "(x{" + "9" * 5000 + "})"),
])
def test_huge_repeat_counts_are_refused_before_compiling(tmp_path, role, pattern):
    config = write(tmp_path / "rx.yaml", f"""
        name: rx
        answer: {{type: text, {role}: {json.dumps(pattern)}}}
    """)
    proc = cli("tasks", "show", str(config), timeout=30)
    one_line_error(proc, f"answer.{role}", pattern[:40], "repeats more than 1,000 times")


@pytest.mark.parametrize("pattern", [r"(\d{4}-\d{2}-\d{2})", r"([{60000}]+)", r"(\{60000\})", r"(\p{L}{3})",
                                     r"((?:ab){10}){100}"])
def test_ordinary_counted_repeats_still_compile(pattern):
    from selfconsistency.extract import compile_user_pattern

    assert compile_user_pattern(pattern).groups >= 1


# -- YAML alias bombs and huge configs --------------------------------------------------------------

LOL_LEVELS = "\n".join(
    f"      a{level}: &a{level} [{', '.join([f'*a{level - 1}'] * 9 if level else ['lol'] * 9)}]" for level in range(9))


@pytest.mark.timeout(60)
@pytest.mark.parametrize("command", ["tasks show", "run"])
def test_yaml_alias_bombs_are_refused_with_the_line(tmp_path, command):
    config = tmp_path / "lol.yaml"
    config.write_text("name: lol\nprompt:\n  exemplars:\n    - rationale: r\n      question:\n"
                      "        question: q\n        bomb:\n" + textwrap.indent(LOL_LEVELS, "    ") + "\n")
    data = tmp_path / "data.jsonl"
    data.write_text(json.dumps({"question": "What is 2+3?", "answer": "5"}) + "\n")
    args = ["tasks", "show", str(config)] if command == "tasks show" else \
        ["run", str(config), "--data", str(data), "--run-dir", str(tmp_path / "run"), "--quiet"]
    one_line_error(cli(*args, timeout=50), f"{config}:8:", "aliases")


def test_a_single_harmless_alias_is_refused_too(tmp_path):
    config = write(tmp_path / "alias.yaml", """
        name: alias
        answer: &shared {type: number}
        description: *shared
    """)
    with pytest.raises(DataError, match=r"alias.yaml:2: YAML anchors and aliases \(&shared"):
        get_task(str(config))


def test_a_huge_task_config_is_refused(tmp_path):
    config = tmp_path / "big.yaml"
    config.write_text("name: big\ndescription: " + "x" * 2_000_000 + "\n")
    with pytest.raises(DataError, match="big.yaml: task config larger than 1,000,000 bytes"):
        get_task(str(config))
