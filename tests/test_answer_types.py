"""Answer types are declared once (tasks/answer_types.py): a new one is one registration, and task configs,
the zero-shot instruction, --stop-at-answer, the Python API and the server all take it by name."""

import re

import pytest

from conftest import write
from selfconsistency.answer_stop import answer_complete_pattern, complete_end
from selfconsistency.tasks import get_task
from selfconsistency.tasks.answer_types import AnswerType, answer_type_names, register_answer_type
from selfconsistency.tasks.base import DataError

ROMAN = {"I": 1, "V": 5, "X": 10, "L": 50, "C": 100}


def _roman_value(text):
    total = 0
    for here, after in zip(text, text[1:] + " ", strict=True):
        value = ROMAN[here]
        total += -value if ROMAN.get(after, 0) > value else value
    return str(total)


def _roman_gold(raw, spec, choices):
    if not re.fullmatch(r"[IVXLC]+", raw):
        raise ValueError(f"gold {raw!r} is not a roman numeral")
    return _roman_value(raw), 1


def _roman_paths(spec, flexible):
    def extract(text, question):
        found = re.findall(r"answer is ([IVXLC]+)\b", text)
        return _roman_value(found[-1]) if found else None
    return extract


@pytest.fixture(scope="module")
def roman():
    register_answer_type(AnswerType("roman", "a roman numeral", _roman_paths, _roman_gold, placeholder="R",
                                    shape=r"[IVXLC]+"))
    return "roman"


def test_a_registered_type_is_a_task_configs_type(tmp_path, roman):
    data = tmp_path / "numbers.jsonl"
    data.write_text('{"question": "Twice seven?", "answer": "XIV"}\n')
    config = write(tmp_path / "roman.yaml", """
        name: roman
        answer: {type: roman}
        prompt:
          template: "{{ question }}"
        """)
    task = get_task(str(config))
    question = task.load(data).questions[0]
    assert question.gold == "14"
    assert task.extractor()("7 + 7 = 14. The answer is XIV.", question) == "14"
    assert task.zero_shot_instruction() == "The answer is R."
    pattern = answer_complete_pattern(task.spec.prompt.answer_statement, "roman")
    assert complete_end("so. The answer is XIV. More", pattern) == len("so. The answer is XIV.")


def test_an_unknown_type_is_refused_naming_the_known_ones(tmp_path):
    config = write(tmp_path / "bad.yaml", """
        name: bad
        answer: {type: poem}
        """)
    with pytest.raises(DataError, match="unknown answer type 'poem'; use number, letter, yes_no, text, free"):
        get_task(str(config))


def test_the_api_takes_every_registered_type(roman):
    from selfconsistency import SelfConsistency

    for name in answer_type_names():
        if name == "letter":  # needs a task whose records have choices
            continue
        sc = SelfConsistency(model="m", backend="openai", base_url="http://127.0.0.1:9/v1", answer_type=name)
        assert sc._task_of(sc.task).spec.answer.type == name
    with pytest.raises(ValueError, match="unknown answer type 'poem'"):
        SelfConsistency(model="m", backend="openai", base_url="http://127.0.0.1:9/v1", answer_type="poem")
