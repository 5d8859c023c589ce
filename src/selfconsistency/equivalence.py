"""Equivalence classes of one question's written answers, for answer types whose equal answers can be
written differently (`math`: `\\frac{1}{2}`, `0.5` and `\\dfrac12`). Pure: the comparison is passed in.

Why classes are computed per question, over its distinct written forms, and stored (rather than a
canonical key computed from each answer alone): math-verify decides equivalence pairwise (`verify(gold,
target)`: numeric tolerance, sets against intervals, `x = 5` against `5`, `\\text{}` against words); it
has no canonical form, and a key made by us from its parse would be a second, hand-written notion of
equality that the correctness check (math-verify against the gold) would not share. So the writer of a
run groups each question's written forms with math-verify and stores the classes (`answer_classes.py`);
the store's readers return each path's class, so every reader (answer, serve, the API, report.html,
export, results, simulate) sees the same votes and cannot bypass them. The comparisons' verdicts are
stored too, so a resumed run or a re-read never decides a pair differently (a time limit could).

The classes depend only on the multiset of written forms, never on the order paths came in:

- the forms are taken most frequent first, equal counts by text (so a class's first form, its key and
  how it is shown, is its most frequent written form);
- each form joins the first class (in that order) whose key it is equivalent to, compared as
  `same(key, form)`; otherwise it starts a class;
- a form beyond the limits (`usable(form)` false: too large, or its parse ran out of time) is its own
  class and is compared with nothing;
- the gold joins the class of the identical written form if there is one, else the first class whose key
  it is equivalent to (`same(gold, key)`, math-verify's gold-first order), else it stands alone.

Comparisons are between distinct written forms only (never per path), each ordered pair at most once
(the caller caches), and a form is compared with class keys only, not with every other form.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

Same = Callable[[str, str], bool]


def ordered_forms(counts: Mapping[str, int]) -> list[str]:
    """The written forms most frequent first, equal counts by text."""
    return sorted(counts, key=lambda form: (-counts[form], form))


def group(counts: Mapping[str, int], same: Same, usable: Callable[[str], bool]) -> dict[str, str]:
    """Each written form's class key (the class's most frequent form), from each form's count of paths."""
    keys: list[str] = []
    classes: dict[str, str] = {}
    for form in ordered_forms(counts):
        if not usable(form):
            classes[form] = form
            continue
        key = next((key for key in keys if same(key, form)), None)
        if key is None:
            keys.append(form)
            key = form
        classes[form] = key
    return classes


def gold_class(gold: str, classes: Mapping[str, str], same: Same, usable: Callable[[str], bool]) -> str:
    """The class key the gold belongs to (`classes`: `group`'s result, in its order), or the gold itself."""
    if gold in classes:
        return classes[gold]
    if not usable(gold):
        return gold
    keys = list(dict.fromkeys(key for form, key in classes.items() if form == key and usable(key)))
    return next((key for key in keys if same(gold, key)), gold)
