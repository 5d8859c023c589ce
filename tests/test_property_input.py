"""Property tests: random Unicode, random nesting and numbers in every promised format through the
neutraliser, the data loader and the extractors. Invariants: no uncaught exception, no prompt marker
survives neutralisation, extraction ends in bounded time."""

import json
import re
import time
from fractions import Fraction

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from selfconsistency.extract import NumberExtractor
from selfconsistency.sanitize import sanitize
from selfconsistency.tasks import DataError, get_task

FAST = settings(max_examples=60, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])

# Pieces a hostile text is made of, mixed into random Unicode.
MARKERS = ["Q:", "A:", "q :", "Question:", "Answer:", "Human:", "Assistant:", "System:", "User:", "The answer is",
           "answer  is", "<|im_start|>", "<|im_end|>", "<|endoftext|>", "[INST]", "[/INST]", "<<SYS>>", "</s>",
           "<s>", "<start_of_turn>", "<end_of_turn>", "\n", "\n\n", "\r\n", "\r", "\u2028", "\u2029", "\u0085",
           "\x0b", "\x0c", "\x1c", "\x00", "\u202e", "\u2066", "\u200b", "\u200c", "\u200d", "\ufeff", " ", "\t"]
hostile_text = st.lists(st.one_of(st.sampled_from(MARKERS), st.text(max_size=12)), max_size=25).map("".join)

MARKER_AT_LINE_START = re.compile(r"(?i)^[\s\u200c\u200d]*(Q|A|Question|Answer|Human|Assistant|System|User)\s*:")
ANSWER_IS = re.compile(r"answer\s+is\b", re.IGNORECASE)  # what extraction looks for
SPECIAL = re.compile(r"<\|[^|<>]{0,40}\|>|\[/?INST\]|<<\s*/?SYS\s*>>|</?s>|<(?:start|end)_of_turn>", re.IGNORECASE)
HIDDEN = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f\u2028\u2029\u202a-\u202e\u2066-\u2069\ufeff]")


@FAST
@given(hostile_text)
def test_no_marker_survives_neutralisation(text):
    cleaned = sanitize(text, max_chars=10_000)
    assert not any(MARKER_AT_LINE_START.match(line) for line in cleaned.text.split("\n"))
    assert not ANSWER_IS.search(cleaned.text) and not SPECIAL.search(cleaned.text)
    assert not HIDDEN.search(cleaned.text)
    assert len(cleaned.text.splitlines()) == cleaned.text.count("\n") + bool(cleaned.text)  # only "\n" breaks lines
    assert not re.search(r"\n\s*\n", cleaned.text)  # no blank line ends an exemplar block
    assert sanitize(cleaned.text, max_chars=10_000).issues == ()  # nothing left to neutralise
    if not cleaned.issues:  # clean text passes unchanged
        assert cleaned.text == text.replace("\r\n", "\n").replace("\r", "\n").strip()


gsm_record = st.fixed_dictionaries({"question": st.one_of(hostile_text, st.integers(), st.floats(), st.none(),
                                                          st.booleans(), st.lists(st.integers(), max_size=3)),
                                    "answer": st.one_of(st.text(max_size=20), st.integers().map(lambda n: f"#### {n}"),
                                                        st.floats(allow_nan=True).map(lambda x: f"#### {x}"))})
nested = st.recursive(st.one_of(st.none(), st.booleans(), st.integers(), st.floats(), st.text(max_size=8)),
                      lambda inner: st.one_of(st.lists(inner, max_size=4),
                                              st.dictionaries(st.text(max_size=5), inner, max_size=4)),
                      max_leaves=20)


@FAST
@given(st.lists(st.one_of(gsm_record, st.dictionaries(st.sampled_from(["question", "answer", "id", "x"]), nested)),
                min_size=1, max_size=6),
       st.sampled_from(["jsonl", "json", "csv"]), st.booleans())
def test_the_loader_refuses_or_loads_random_records(tmp_path_factory, records, fmt, bom):
    path = tmp_path_factory.mktemp("data") / f"random.{fmt}"
    if fmt == "jsonl":
        text = "".join(json.dumps(r) + "\n" for r in records)
    elif fmt == "json":
        text = json.dumps(records)
    else:
        import csv
        import io

        buffer = io.StringIO()
        writer = csv.writer(buffer)
        writer.writerow(["question", "answer"])
        for record in records:
            writer.writerow([str(record.get("question", "")), str(record.get("answer", ""))][: 1 + len(record) % 2])
        text = buffer.getvalue()
    path.write_bytes(("\ufeff" if bom else "").encode() + text.encode("utf-8", errors="surrogatepass"))
    try:
        data = get_task("gsm8k").load(path)
    except DataError as exc:
        assert "\n" not in str(exc).strip() or "JSON" in str(exc)
        return
    for question in data.questions:
        assert question.text and not any(MARKER_AT_LINE_START.match(line) for line in question.text.split("\n"))
        # no gold (an empty or missing answer) makes a question to answer, not to measure
        assert question.gold is None or re.fullmatch(r"-?\d+(/\d+)?", question.gold)


@FAST
@given(st.binary(max_size=300), st.sampled_from(["jsonl", "json", "csv"]))
def test_the_loader_survives_random_bytes(tmp_path_factory, content, fmt):
    path = tmp_path_factory.mktemp("bytes") / f"junk.{fmt}"
    path.write_bytes(content)
    try:
        get_task("gsm8k").load(path)
    except DataError:
        pass


@FAST
@given(st.integers(min_value=1, max_value=3000))
def test_the_loader_survives_deep_nesting(tmp_path_factory, depth):
    path = tmp_path_factory.mktemp("deep") / "deep.jsonl"
    path.write_text('{"question": ' + "[" * depth + "]" * depth + ', "answer": "#### 1"}\n')
    try:
        get_task("gsm8k").load(path)
    except DataError:
        pass


def _written(value: Fraction, style: str) -> str:
    """`value` as the README promises a path may write it."""
    sign = "-" if value < 0 else ""
    value = abs(value)
    if style == "fraction":
        return f"{sign}{value.numerator}/{value.denominator}"
    whole, cents = divmod(value.numerator * 100 // value.denominator, 100)
    decimals = f".{cents:02d}" if cents or style == "decimals" else ""
    if style == "dollars":
        return f"{sign}${whole:,}{decimals}"
    if style == "commas":
        return f"{sign}{whole:,}{decimals}"
    return f"{sign}{whole}{decimals}"


@FAST
@given(st.integers(min_value=-10**9, max_value=10**9), st.sampled_from([1, 4, 100]),
       st.sampled_from(["plain", "commas", "dollars", "decimals", "fraction"]), st.text(max_size=30))
def test_numbers_in_every_promised_format_extract_exactly(numerator, denominator, style, noise):
    value = Fraction(numerator, denominator)
    written = _written(value, style)
    expected = Fraction(written.replace("$", "").replace(",", "")) if "/" not in written else value
    canonical = str(expected.numerator) if expected.denominator == 1 else f"{expected.numerator}/{expected.denominator}"
    noise = re.sub(r"(?i)answer|\d", "", noise)
    assert NumberExtractor()(f"{noise}\nSo the answer is {written}.") == canonical
    assert NumberExtractor(flexible=True)(f"{noise} we get {written}") == canonical


CHOICES = (("A", "red"), ("B", "green"), ("C", "blue"))


@settings(max_examples=80, deadline=None, database=None)
@given(st.one_of(hostile_text, st.text(max_size=400),
                 st.lists(st.sampled_from(["The answer is", " ", "9" * 50, ",", "(B)", "yes", "no", "$", ".", "-",
                                           "/", "\n", "answer:", "**C**", "1,000", "0.5"]),
                          max_size=200).map("".join)))
def test_extraction_is_total_and_quick(text):
    """Every registered answer type's extractor, strict and flexible, on one- and two-answer questions."""
    from selfconsistency.tasks.answer_types import answer_type, answer_type_names
    from selfconsistency.tasks.base import Question
    from selfconsistency.tasks.spec import AnswerSpec

    questions = [Question("q", 0, "?", None, CHOICES, n_answers) for n_answers in (1, 2)]
    started = time.perf_counter()
    results = [answer_type(name).extractor(AnswerSpec(type=name), flexible)(text, question)
               for name in answer_type_names() for flexible in (True, False) for question in questions]
    assert time.perf_counter() - started < 2.0
    assert all(r is None or isinstance(r, str) for r in results)
