"""Reading a math answer from a path (the rules, in order), thinking blocks, the size limits, and the
grouping of one question's written answers into classes: deterministic, independent of path order."""

import itertools

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from selfconsistency.equivalence import gold_class, group, ordered_forms
from selfconsistency.math_answers import beyond_size, last_boxed, math_answer, split_thinking, tidy


@pytest.mark.parametrize(("text", "answer", "rule"), [
    (r"so $\boxed{5}$.", "5", "boxed"),
    (r"first \boxed{1}, then \boxed{\frac{1}{2}}", r"\frac{1}{2}", "boxed"),  # the last one
    (r"\boxed{\left( 3, \frac{\pi}{2} \right)}", r"\left( 3, \frac{\pi}{2} \right)", "boxed"),
    (r"\boxed{\{1,2\}}", r"\{1,2\}", "boxed"),  # escaped braces do not end the box
    (r"\fbox{7} is it", "7", "boxed"),
    (r"\boxed 5$ and more", "5", "boxed"),  # the brace-less form
    (r"\boxed{a{b{c{d}}}}", "a{b{c{d}}}", "boxed"),  # nested braces
    (r"\boxed{12} then a cut-off \boxed{1", "12", "boxed"),  # the last *complete* box
    (r"\boxed{$\frac{3}{4}$}", r"\frac{3}{4}", "boxed"),
    ("Final Answer: The final answer is $24$. I hope it is correct.", "24", "final_answer"),
    ("Final Answer: The final answer is $[2,5)$. I hope it is correct.", "[2,5)", "final_answer"),
    ("Final Answer: The final answer is $-\\frac{2}{3}$. ", r"-\frac{2}{3}", "final_answer"),  # stopped at it
    ("Final Answer: The final answer is 3", "3", "final_answer"),
    ("So the answer is $x=5$.", "x=5", "answer_is"),
    ("The answer is: 12\nmore text", "12", "answer_is"),
    ("no answer here", None, None),
    (r"Therefore, the final answer is $\boxed{\frac{1}{q", None, None),  # cut inside its box (a real 0.5B path)
    (r"Final Answer: The final answer is $\boxed{7", None, None),
    (r"\boxed{}", None, None),  # an empty box is none
])
def test_rules(text, answer, rule):
    assert math_answer(text) == (answer, rule)


def test_a_box_beats_a_later_statement_and_minerva_beats_the_answer_is():
    text = r"\boxed{4} The answer is 5. Final Answer: The final answer is $6$. I hope it is correct."
    assert math_answer(text) == ("4", "boxed")
    assert math_answer(text.replace(r"\boxed{4}", "")) == ("6", "final_answer")


def test_last_boxed_on_unbalanced_and_huge_input_is_linear_and_safe():
    assert last_boxed(r"\boxed{" * 10_000) is None
    nested = r"\boxed{" + "{" * 10_000 + "1" + "}" * 10_000 + "}"
    assert last_boxed(nested) == "{" * 10_000 + "1" + "}" * 10_000


@pytest.mark.parametrize(("raw", "tidied"), [
    ("$5$", "5"), (r"\(5\)", "5"), (r"\[ 5 \]", "5"), (" 5. ", "5"), ("$$5$$", "5"), ("5.5", "5.5"),
])
def test_tidy(raw, tidied):
    assert tidy(raw) == tidied


def test_thinking_is_never_searched():
    text = r"<think>maybe \boxed{99}</think>So \boxed{3}."
    split = split_thinking(text)
    assert math_answer(split.visible) == ("3", "boxed")
    assert split.thinking == r"maybe \boxed{99}" and not split.unclosed
    assert split.spans == ((0, text.index("So")),)


def test_an_unclosed_block_makes_the_rest_thinking():
    split = split_thinking(r"Plan. <think>so it is \boxed{99} and then")
    assert split.visible == "Plan. " and split.unclosed
    assert math_answer(split.visible) == (None, None)


def test_a_close_tag_without_open_tag_ends_a_block_begun_by_the_prompt():
    split = split_thinking(r"thinking \boxed{1}</think>\boxed{2}")
    assert split.visible == r"\boxed{2}" and not split.unclosed and split.thinking == r"thinking \boxed{1}"


def test_other_tags_and_no_tags():
    text = r"<reasoning>\boxed{1}</reasoning>\boxed{2}"
    assert math_answer(split_thinking(text, ("<reasoning>", "</reasoning>")).visible)[0] == "2"
    assert split_thinking(text, None).visible == text


def test_thinking_tokens_are_those_ending_inside_a_block():
    text = "<think>ab</think>cd"
    ends = tuple(range(1, len(text) + 1))  # one character per token
    assert split_thinking(text).tokens_inside(ends) == len("<think>ab</think>")


@pytest.mark.parametrize(("answer", "reason"), [
    ("1" * 401, "length"), ("{" * 17 + "}" * 17, "nesting"), (r"\def\x{1}\x", "macro"),
    (r"\newcommand{\a}{1}", "macro"), (r"\frac{1}{2}", None), ("{" * 16 + "}" * 16, None),
    (r"\definitely", None),  # a longer command is not \def
])
def test_size_limits(answer, reason):
    assert beyond_size(answer) == reason


# -- grouping --------------------------------------------------------------------------------------

def numeric_same(a, b):
    """A stand-in equivalence: forms are numbers written as fractions or decimals."""
    def value(form):
        if "/" in form:
            n, d = form.split("/")
            return float(n) / float(d)
        return float(form)
    return abs(value(a) - value(b)) < 1e-9


def test_a_class_is_shown_as_its_most_frequent_written_form():
    classes = group({"0.5": 2, "1/2": 3, "2/4": 1, "3": 2}, numeric_same, lambda form: True)
    assert classes == {"1/2": "1/2", "0.5": "1/2", "2/4": "1/2", "3": "3"}


def test_a_form_beyond_the_limits_is_its_own_class():
    classes = group({"0.5": 2, "1/2": 3}, numeric_same, lambda form: form != "0.5")
    assert classes == {"1/2": "1/2", "0.5": "0.5"}


def test_the_gold_joins_the_identical_form_else_the_first_equivalent_key():
    classes = group({"0.5": 2, "1/2": 3, "7": 1}, numeric_same, lambda form: True)
    assert gold_class("0.5", classes, numeric_same, lambda f: True) == "1/2"
    assert gold_class("2/4", classes, numeric_same, lambda f: True) == "1/2"
    assert gold_class("9", classes, numeric_same, lambda f: True) == "9"
    assert gold_class("2/4", classes, numeric_same, lambda f: f != "2/4") == "2/4"


def test_comparisons_are_between_forms_and_class_keys_only():
    asked = []

    def same(a, b):
        asked.append((a, b))
        return numeric_same(a, b)

    counts = {"1/2": 5, "0.5": 4, "2/4": 3, "3": 2, "6/2": 1}
    group(counts, same, lambda form: True)
    keys = {"1/2", "3"}
    assert all(a in keys for a, _ in asked)
    assert len(asked) == len(set(asked)) <= len(counts) * len(keys)


FORMS = st.sampled_from(["1/2", "0.5", "2/4", "3", "6/2", "3.0", "0.25", "1/4", "7"])


@settings(max_examples=200, deadline=None)
@given(st.lists(FORMS, min_size=1, max_size=30), st.randoms(use_true_random=False))
def test_the_same_paths_in_any_order_give_the_same_classes(paths, rng):
    """Path order never changes the classes (nor an intransitive equivalence's outcome)."""
    def loose(a, b):  # intransitive on purpose: within 0.3 of each other
        return abs(float(eval(a)) - float(eval(b))) <= 0.3  # noqa: S307 - the forms above

    def counts(order):
        out = {}
        for form in order:
            out[form] = out.get(form, 0) + 1
        return out

    shuffled = list(paths)
    rng.shuffle(shuffled)
    for same in (numeric_same, loose):
        assert group(counts(paths), same, lambda f: True) == group(counts(shuffled), same, lambda f: True)
    assert ordered_forms(counts(paths)) == ordered_forms(counts(shuffled))


def test_every_permutation_of_a_small_question_gives_one_grouping():
    paths = ["1/2", "0.5", "0.5", "3", "6/2", "2/4"]
    seen = set()
    for order in itertools.permutations(paths):
        counts = {}
        for form in order:
            counts[form] = counts.get(form, 0) + 1
        seen.add(tuple(sorted(group(counts, numeric_same, lambda f: True).items())))
    assert len(seen) == 1
