"""--stop-at-answer without the model: the completion condition, the path decoder ending on it, and the
run's identity (a store made with it never resumes without it, and stores made before it resume as before)."""

import numpy as np
import pytest

from conftest import GSM8K_TEST
from selfconsistency.answer_stop import answer_complete_pattern, complete_end
from selfconsistency.backends.base import GenerationRequest
from selfconsistency.backends.llama_cpp import PathDecoder
from selfconsistency.experiment import plan_requests
from selfconsistency.prompts import Prompt, PromptFormat
from selfconsistency.sampling import SamplingParams
from selfconsistency.settings import RunSettings
from selfconsistency.tasks import DataError, get_task

GSM8K = answer_complete_pattern("The answer is {answer}.", "number")


@pytest.mark.parametrize(("text", "kept"), [
    ("So 3 + 4 = 7. The answer is 7. Q: next", "So 3 + 4 = 7. The answer is 7."),
    ("The answer is 195.0. Let's check", "The answer is 195.0."),  # "195." was no end: a digit followed
    ("The answer is 0.Q: There are", "The answer is 0."),
    ("the answer is $1,000. ```python", "the answer is $1,000."),
    ("The answer is 3/4.\n", "The answer is 3/4."),
    ("The answer is 7. Then the answer is 9. ", "The answer is 7."),  # the first complete statement
])
def test_a_complete_statement_ends_where_its_text_does(text, kept):
    assert text[: complete_end(text, GSM8K)] == kept


@pytest.mark.parametrize("text", [
    "The answer is 72.",  # "72.5" may still come: not complete until a non-digit follows
    "The answer is 72",
    "The answer is 195.0",
    "The answer is 18 dollars. So",  # not the statement's shape: the path goes on to its line's end
    "The final answer is 20. More",
    "Half of 10 is 5. Then",
])
def test_an_incomplete_or_other_statement_is_not_complete(text):
    assert complete_end(text, GSM8K) is None


def test_letter_and_yes_no_statements_and_shapeless_answers():
    letter = answer_complete_pattern("The answer is {answer}.", "letter")
    assert complete_end("so The answer is (C). Then", letter) == len("so The answer is (C).")
    yes_no = answer_complete_pattern("The answer is {answer}.", "yes_no")
    assert complete_end("The answer is yes. Because", yes_no) == len("The answer is yes.")
    assert answer_complete_pattern("The answer is {answer}.", "free") is None
    assert answer_complete_pattern("The answer is {answer}.", "text") is None
    assert answer_complete_pattern("Answer: {answer}", "number") is None  # nothing marks the answer's end


def _decode(pieces: list[str], complete: str | None, stop: tuple[str, ...] = ("\n",)) -> PathDecoder:
    """A path fed `pieces` one token each (greedy on one-hot logits), as the engine feeds the model's."""
    vocabulary = [piece.encode() for piece in pieces]
    params = SamplingParams(temperature=0.0, max_tokens=50, stop=stop, complete=complete)
    prompt = Prompt(shared="", question="Q", messages=(), format=PromptFormat.completion)
    request = GenerationRequest("q", 0.0, 0, prompt, params)
    path = PathDecoder(request, 1, lambda tokens: b"".join(vocabulary[t] for t in tokens), lambda token: False)
    for step in range(len(pieces)):
        logits = np.zeros(len(pieces), dtype=np.float32)
        logits[step] = 1.0
        if path.push(logits) is None:
            break
    return path


def test_the_decoder_ends_a_path_once_its_statement_is_complete():
    pieces = ["3 + 4 = 7.", " The answer is", " 7", ".", " Q", ":", " What"]
    ended = _decode(pieces, GSM8K)
    assert (ended.text, ended.finish_reason, len(ended.tokens)) == ("3 + 4 = 7. The answer is 7.", "answer", 5)
    whole = _decode(pieces, None)  # without the condition: still going after every piece (no line break)
    assert whole.text == "".join(pieces) and whole.finish_reason is None
    # A line break right after the statement is the stop it always was.
    at_line_end = _decode(["The answer is 7.", "\n", "Q"], GSM8K)
    assert (at_line_end.text, at_line_end.finish_reason) == ("The answer is 7.", "stop")


def test_a_bad_completion_pattern_is_refused_when_built():
    with pytest.raises(ValueError, match="completion pattern '\\(The answer': missing \\)"):
        SamplingParams(temperature=0.7, complete="(The answer")


def test_only_runs_with_the_option_carry_the_condition_and_it_is_in_their_identity():
    task = get_task("gsm8k")
    plain = RunSettings(data=str(GSM8K_TEST), limit=1, paths=1)
    stopping = plain.model_copy(update={"stop_at_answer": True})
    data = plain.load(task)
    assert {r.params.complete for r in plan_requests(plain, task, data)} == {None}
    # the task's thinking tags travel with it: an answer inside a thinking block does not end the path
    assert {r.params.complete for r in plan_requests(stopping, task, data)} == {
        answer_complete_pattern("The answer is {answer}.", "number", ("<think>", "</think>"))}
    # Stores made before the option record no such key: their identity (and settings hash) is unchanged.
    assert "stop_at_answer" not in plain.identity(task)
    assert stopping.identity(task) == {**plain.identity(task), "stop_at_answer": True}
    assert stopping.settings_hash(task) != plain.settings_hash(task)


def test_a_task_without_a_fixed_answer_shape_refuses_the_option(tmp_path):
    config = tmp_path / "free.yaml"
    config.write_text("name: freeform\nanswer:\n  type: free\nprompt:\n  template: '{{ question }}'\n")
    data = tmp_path / "free.jsonl"
    data.write_text('{"question": "Say hi", "answer": "hi"}\n')
    task = get_task(str(config))
    settings = RunSettings(task=str(config), data=str(data), stop_at_answer=True, paths=1)
    with pytest.raises(DataError, match="--stop-at-answer: task freeform"):
        plan_requests(settings, task, settings.load(task))
