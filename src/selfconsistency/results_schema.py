"""results.json's schema: what `results.build_results` returns, as typed models. Every key is declared;
an undeclared one fails validation (tests validate real runs' results.json against it), and
docs/results.schema.json is this module's JSON Schema (a test keeps the two equal).

    python -m selfconsistency.results_schema > docs/results.schema.json
"""

from __future__ import annotations

import json
from typing import Any

from pydantic import BaseModel, ConfigDict, Field


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Runtime(_Strict):
    """Measured time: differs between identical runs."""

    seconds: float | None
    completion_tokens_per_second: float | None = None


class CurvePoint(_Strict):
    """Accuracy of the vote over k paths: the mean and std over random k-subsets (`subset_runs` of them)
    and the exact expectation over all k-subsets and tie-breaks."""

    k: int = Field(ge=1)
    mean: float
    std: float
    exact: float


class WeightedPoint(_Strict):
    k: int = Field(ge=1)
    mean: float
    std: float


class Adaptive(_Strict):
    """The --stop rule's result: each question's vote over the paths it used before its rule stopped it."""

    rule: str
    accuracy: float
    mean_paths_used: float
    mean_paths_generated: float
    max_paths: int
    stopped_by_rule: int


class Setting(_Strict):
    """One setting (greedy, or one sampling temperature) over the complete questions."""

    temperature: float
    paths_per_question: int
    paths: int
    abstention_rate: float
    truncated_paths: int
    prompt_tokens: int
    completion_tokens: int
    cost_usd: float | None
    runtime: Runtime
    accuracy: float | None = None  # greedy only
    curve: list[CurvePoint] | None = None  # sampled only
    weighted_votes: dict[str, list[WeightedPoint]] | None = None  # sampled only: vote method -> curve
    adaptive: Adaptive | None = None  # sampled, with --stop


class BatchJob(_Strict):
    job: str
    status: str
    records: int
    paths: int
    records_answered: int | None
    paths_collected: int | None
    input_tokens: int | None
    output_tokens: int | None
    runtime: Runtime
    cost_usd: float | None = None


class OnDemandCalls(_Strict):
    group: str
    records: int
    paths: int
    input_tokens: int
    output_tokens: int
    cost_usd: float | None = None


class Spend(_Strict):
    """The run's spend ledger as billed (the providers' token counts)."""

    batch_usd: float | None
    on_demand_usd: float | None
    total_usd: float | None
    tokens: int
    on_demand_paths: int


class Results(_Strict):
    task: str
    backend: str
    model: str
    config: dict[str, Any]  # the run's settings, flat, as the store keeps them (settings.RunSettings)
    questions: int  # complete questions: the ones every number below is over
    labelled_questions: int  # of those, the ones with a gold: accuracy is over these
    incomplete_questions: list[str]
    neutralised_inputs: dict[str, list[str]]  # question id -> what was neutralised in its input
    batch_jobs: list[BatchJob]
    on_demand_calls: list[OnDemandCalls]
    spend: Spend
    greedy: Setting | None
    sampled: list[Setting]


def json_schema() -> dict[str, Any]:
    return Results.model_json_schema()


if __name__ == "__main__":
    print(json.dumps(json_schema(), indent=2, sort_keys=True))
