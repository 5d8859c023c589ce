import pytest

from selfconsistency.extract import NumberExtractor, canonical_number

# Completions as the embedded Qwen models wrote them (trimmed), and forms seen from other models.
REAL_COMPLETIONS = [
    (" There are 15 trees originally. So 21 - 15 = 6. The answer is 6.", "6"),
    (" So the total cost was $80,000 + $50,000 = $130,000. The answer is $130,000.", "130000"),
    (" The first 15 glasses cost $5 each. So 15 x $5 = $75. The answer is 78.", "78"),
    (" 1.2 * $10 = $12. So her total earnings are $400 + $60 = $460. The answer is 460.", "460"),
    (" She has 16 - 3 - 4 = 9 eggs. 9 * 2 = 18. The answer is $18.00.", "18"),
    (" The temperature dropped to -5 degrees. The answer is -5.", "-5"),
    (" He ate 3/4 of the pie. The answer is 3/4.", "3/4"),
    (" So he saves 0.75 of it. The answer is 0.75.", "3/4"),
    (" Total is 1,234,567 dollars. The answer is 1,234,567", "1234567"),
    (" The answer is: 42", "42"),
    (" The answer is **42**.", "42"),
    (" Therefore, the answer is \\boxed{17}.", "17"),
    (" The answer is 18 dollars. Then 5 + 3 = 8 for the next one.", "18"),
    # restated answer: the last statement wins
    (" The answer is 10. Wait, 4 + 5 = 9. The answer is 9.", "9"),
    # no statement: flexible fallback takes the last number
    (" So the total load is 100 + 100 = 200 minutes.", "200"),
    (" He travels 3 x 60 = 180 miles, then 2 x 80 = 160 miles. ", "160"),
    # a statement without a number falls back to the last number
    (" 7 + 8 = 15. The answer is fifteen.", "15"),
    (" I don't know.", None),
    ("", None),
    # version-like and list-like numbers are not thousands separators
    (" Items 5,6 and 7. The answer is 5,6", "5"),
]


@pytest.mark.parametrize("text,expected", REAL_COMPLETIONS)
def test_flexible_extraction(text, expected):
    assert NumberExtractor(flexible=True)(text) == expected


def test_strict_only_abstains_without_statement():
    strict = NumberExtractor(flexible=False)
    assert strict(" So the total load is 100 + 100 = 200 minutes.") is None
    assert strict(" so 3 + 4 = 7. The answer is 7.") == "7"


@pytest.mark.parametrize("a,b", [("18", "18.00"), ("$1,000", "1000"), ("3/4", "0.75"), ("-2", "−2"),
                                 ("6/3", "2"), ("$ 5", "5")])
def test_equal_values_share_canonical_form(a, b):
    assert canonical_number(a) == canonical_number(b)


def test_division_by_zero_is_no_number():
    assert canonical_number("3/0") is None
