"""Letter, yes/no and free-text extraction, table-tested on realistic completions."""

import re

import pytest

from selfconsistency.extract import choice_answer, text_answer, yes_no_answer

AWS = (("A", "Create an Aurora replica in another Availability Zone"),
       ("B", "Use Amazon S3 Glacier"),
       ("C", "Create an Aurora replica"),
       ("D", "Enable Multi-AZ on the RDS instance"),
       ("E", "Use AWS Backup"))
CSQA = (("A", "bank"), ("B", "library"), ("C", "department store"), ("D", "mall"), ("E", "new york"))

SINGLE = [
    # the exemplar format and its common variants
    ("Revolving doors are in banks for security. The answer is (A).", CSQA, "A"),
    ("So the answer is (c).", CSQA, "C"),
    ("The answer is C.", CSQA, "C"),
    ("The answer is: D", CSQA, "D"),
    ("The answer is **B**.", CSQA, "B"),
    ("The answer is (E) new york.", CSQA, "E"),
    ("Therefore, the answer is B) library.", CSQA, "B"),
    ("answer: C", CSQA, "C"),
    ("Answer: (D)", CSQA, "D"),
    ("Final answer: **A**", CSQA, "A"),
    ("The correct answer is C: Create an Aurora replica. It adds read capacity.", AWS, "C"),
    ("The correct answer is (A) Create an Aurora replica in another Availability Zone.", AWS, "A"),
    # the last statement wins when a path changes its mind
    ("At first the answer is (B). But banks need security, so the answer is (A).", CSQA, "A"),
    # the answer given only as an option's text
    ("A security door is found at a bank. The answer is bank.", CSQA, "A"),
    ("The answer is department store.", CSQA, "C"),
    ("The answer is Use AWS Backup.", AWS, "E"),
    # the longest option text wins over a shorter one it starts with
    ("The answer is Create an Aurora replica in another Availability Zone.", AWS, "A"),
    # no statement: the last line's formatted label (flexible)
    ("Banks protect money.\nSo (A)", CSQA, "A"),
    ("Libraries are quiet.\nB) library", CSQA, "B"),
    ("Thinking about it...\n**D**", CSQA, "D"),
    ("People shop at malls.\nI pick the mall.", CSQA, "D"),
    # two different single letters at the end: ambiguous, abstain
    ("The answer is B and D.", CSQA, None),
    ("The answer is (A) or (C).", CSQA, None),
    ("Maybe (A) or (B)", CSQA, None),
    # labels that are not options, and lowercase words, are not answers
    ("The answer is (F).", CSQA, None),
    ("The answer is a good question.", CSQA, None),
    ("I am not sure.", CSQA, None),
    ("", CSQA, None),
]

MULTI = [
    ("The answers are B and D.", AWS, "B,D"),
    ("The answer is (B) and (D).", AWS, "B,D"),
    ("The answer is D, B.", AWS, "B,D"),
    ("The answer is B & E", AWS, "B,E"),
    ("Answer: **A** and **C**", AWS, "A,C"),
    ("Only one fits. The answer is (B).", AWS, "B"),  # one of two: a (wrong) answer, not an abstention
]


@pytest.mark.parametrize("text,choices,expected", SINGLE)
def test_single_answer(text, choices, expected):
    assert choice_answer(text, choices, n_answers=1) == expected


@pytest.mark.parametrize("text,choices,expected", MULTI)
def test_two_answers(text, choices, expected):
    assert choice_answer(text, choices, n_answers=2) == expected


def test_strict_mode_needs_a_statement():
    assert choice_answer("Banks protect money.\nSo (A)", CSQA, flexible=False) is None
    assert choice_answer("The answer is (A).", CSQA, flexible=False) == "A"


def test_table_is_large_enough():
    assert len(SINGLE) + len(MULTI) >= 30


@pytest.mark.parametrize("text,expected", [
    ("Birds can fly, and a penguin is a bird that cannot. The answer is no.", "no"),
    ("The answer is Yes.", "yes"),
    ("The answer is: **no**", "no"),
    ("Yes, because water boils at 100C.", "yes"),
    ("No idea, maybe yes", "yes"),
    ("It depends.", None),
])
def test_yes_no(text, expected):
    assert yes_no_answer(text) == expected


def test_free_text_normalised():
    pattern = re.compile(r"answer\s+is\b[\s:]*([^\n]+?)\.?\s*$", re.IGNORECASE | re.MULTILINE)
    steps = ("lower", "strip_punctuation", "strip_articles")
    assert text_answer("So the answer is The Eiffel Tower.", pattern, steps) == "eiffel tower"
    assert text_answer("No statement here", pattern, steps) is None
