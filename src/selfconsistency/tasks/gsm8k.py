"""GSM8K (Cobbe et al. 2021) with the 8 chain-of-thought exemplars of Wei et al. 2022."""

from __future__ import annotations

import json
from importlib.resources import files
from typing import Any

from ..extract import NumberExtractor, parse_gsm8k_gold
from .base import Exemplar, Task


def _load_exemplars() -> tuple[Exemplar, ...]:
    raw = json.loads(files("selfconsistency").joinpath("data/gsm8k_cot_8shot.json").read_text())
    return tuple(Exemplar(question=e["question"], rationale=e["rationale"]) for e in raw["exemplars"])


def _parse(record: dict[str, Any]) -> tuple[str, str]:
    question, answer = record["question"], record["answer"]
    if not isinstance(question, str) or not question.strip():
        raise ValueError("empty 'question'")
    return question.strip(), parse_gsm8k_gold(answer)


GSM8K = Task(
    name="gsm8k",
    description="Grade-school math word problems; numeric answer; 8-shot CoT of Wei et al. 2022",
    parse_record=_parse,
    exemplars=_load_exemplars(),
    make_extractor=lambda flexible: NumberExtractor(flexible=flexible),
    hub_dataset=("openai/gsm8k", "main"),
)
