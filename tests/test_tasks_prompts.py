import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from selfconsistency.prompts import PromptFormat, build_prompt
from selfconsistency.tasks import DataError, get_task

GSM8K = get_task("gsm8k")
EXEMPLARS = GSM8K.load(Path(__file__).resolve().parents[1] / "data/gsm8k/test.jsonl",
                       limit=1).exemplars


def load_questions(task, path, offset=0, limit=None):
    return task.load(path, offset=offset, limit=limit).questions

REPO = Path(__file__).resolve().parents[1]
GSM8K_TEST = REPO / "data" / "gsm8k" / "test.jsonl"


def test_gsm8k_file_loads_with_stable_ids():
    questions = load_questions(GSM8K, GSM8K_TEST, offset=3, limit=2)
    assert [q.id for q in questions] == ["test-00003", "test-00004"]
    assert questions[0].gold == "540"  # James's sprints
    assert len(load_questions(GSM8K, GSM8K_TEST)) == 1319


def test_malformed_line_named(tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({"question": "q", "answer": "#### 1"}) + "\n{oops\n")
    with pytest.raises(DataError, match=r"bad.jsonl:2: malformed JSON"):
        load_questions(GSM8K, bad)


def test_missing_gold_named(tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text("\n" + json.dumps({"question": "q", "answer": "no gold"}) + "\n")
    with pytest.raises(DataError, match=r"bad.jsonl:2:.*gsm8k record unusable"):
        load_questions(GSM8K, bad)


def test_empty_and_unreadable_files(tmp_path):
    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    with pytest.raises(DataError, match="no records found"):
        load_questions(GSM8K, empty)
    with pytest.raises(DataError, match="cannot read"):
        load_questions(GSM8K, tmp_path / "missing.jsonl")
    latin = tmp_path / "latin.jsonl"
    latin.write_bytes(b'{"question": "a", "answer": "#### 1"}\n{"question": "caf\xe9", "answer": "#### 1"}\n')
    with pytest.raises(DataError, match="latin.jsonl:2: not UTF-8"):
        load_questions(GSM8K, latin)


@pytest.mark.slow
def test_hub_offline_gives_one_line_error(tmp_path):
    """Without --data the hub is tried; offline, the CLI says to pass --data, in one line, exit 2."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "HF_HOME": str(tmp_path / "hf")}
    proc = subprocess.run([sys.executable, "-m", "selfconsistency", "run", "gsm8k", "--limit", "1",
                           "--run-dir", str(tmp_path / "run")], capture_output=True, text=True, env=env,
                          timeout=300)
    assert proc.returncode == 2, proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "--data" in lines[0] and "openai/gsm8k" in lines[0], proc.stderr
    assert not (tmp_path / "run" / "samples.sqlite").exists()


def test_completion_prompt_has_eight_exemplars():
    prompt = build_prompt("How many apples?", EXEMPLARS, PromptFormat.completion)
    assert prompt.shared.count("Q: ") == 8 and prompt.shared.count("The answer is") == 8
    assert prompt.shared.startswith("Q: There are 15 trees in the grove.")
    assert prompt.shared.endswith("The answer is 8.\n\n")
    assert prompt.question == "Q: How many apples?\nA:"
    assert prompt.text == prompt.shared + prompt.question


def test_chat_prompt_turns():
    prompt = build_prompt("How many apples?", EXEMPLARS, PromptFormat.chat)
    roles = [m["role"] for m in prompt.chat_messages]
    assert roles == ["user", "assistant"] * 8 + ["user"]
    assert prompt.chat_messages[1]["content"].endswith("The answer is 6.")
    assert prompt.chat_messages[-1]["content"] == "How many apples?"


def test_zero_shot_prompt():
    prompt = build_prompt("How many apples?", EXEMPLARS, PromptFormat.completion, zero_shot=True)
    assert prompt.shared == "" and prompt.question.endswith("A: Let's think step by step.")
    assert GSM8K.stop(zero_shot=True, chat=False) == ("\nQ:",)
    assert build_prompt("How many?", (), PromptFormat.completion).shared == ""  # no exemplars: zero-shot


def test_few_shot_completion_stops_at_end_of_rationale_line():
    assert GSM8K.stop(zero_shot=False, chat=False) == ("\n",)


def test_chat_context_goes_around_the_exemplars():
    from selfconsistency.prompts import PromptFormat, build_prompt
    from selfconsistency.tasks.base import Exemplar

    shots = (Exemplar("1+1?", "2. The answer is 2."),)
    context = (("system", "Be brief."), ("user", "Hi"), ("assistant", "Hello"))
    prompt = build_prompt("2+2?", shots, PromptFormat.chat, context=context)
    assert prompt.messages == (("system", "Be brief."), ("user", "1+1?"), ("assistant", "2. The answer is 2."),
                               ("user", "Hi"), ("assistant", "Hello"), ("user", "2+2?"))
    assert build_prompt("2+2?", shots, PromptFormat.chat).messages[0] == ("user", "1+1?")
