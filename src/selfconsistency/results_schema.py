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
    """Accuracy of the vote over k paths (maj@k): the mean and std over random k-subsets (`subset_runs` of
    them: the spread over which paths a question got) and the exact expectation over all k-subsets and
    tie-breaks, with its 95 % interval over questions (`low`, `high`: percentile bootstrap over questions, the
    benchmark being a sample); and pass@k (Chen et al.'s unbiased estimator, exact) with its interval."""

    k: int = Field(ge=1)
    mean: float
    std: float
    exact: float
    low: float | None = None
    high: float | None = None
    pass_at_k: float | None = None
    pass_low: float | None = None
    pass_high: float | None = None


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


class Equivalence(_Strict):
    """What grouping equivalent written answers into classes changed in the vote over all N paths (answer
    types with classes, such as math)."""

    merged_questions: int  # questions whose paths wrote one class in two or more ways
    winners_changed: int  # questions whose vote over written forms, as strings, picks another class
    accuracy_as_strings: float | None  # that string vote's accuracy (a winner is right if its class is the gold's)
    accuracy_by_classes: float | None  # the class vote's accuracy, ties broken the same seeded way (comparable)


class Setting(_Strict):
    """One setting (greedy, or one sampling temperature) over the complete questions."""

    temperature: float
    paths_per_question: int
    paths: int
    abstention_rate: float
    truncated_paths: int
    truncated_in_thinking: int  # of those, cut inside their thinking block (so without an answer)
    prompt_tokens: int
    completion_tokens: int
    thinking_tokens: int  # of completion_tokens, those inside thinking blocks (as far as they are known)
    cost_usd: float | None
    thinking_cost_usd: float | None  # the thinking tokens' part of cost_usd
    runtime: Runtime
    accuracy: float | None = None  # greedy only
    interval: list[float] | None = None  # greedy only: the 95 % interval of its accuracy over questions
    curve: list[CurvePoint] | None = None  # sampled only
    # sampled only: at each k, the expected number of questions whose gold ties for the lead (the ones a tie
    # rule decides: broken at random, or counted as no answer with --ties abstain)
    ties_with_gold: list[float] | None = None
    weighted_votes: dict[str, list[WeightedPoint]] | None = None  # sampled only: vote method -> curve
    adaptive: Adaptive | None = None  # sampled, with --stop
    equivalence: Equivalence | None = None  # sampled, when answers have classes


class GroupSetting(_Strict):
    temperature: float
    paths: int
    accuracy: float  # exact accuracy of the vote over all `paths` paths


class Group(_Strict):
    """The labelled questions whose record has one value of a grouping field (a MATH subject, a level)."""

    value: str
    questions: int
    greedy: float | None
    sampled: list[GroupSetting]


class Limits(_Strict):
    """How often answers met the limits of their comparison (math): written answers too large or too slow
    to parse, each counted as its own string; comparisons that ran out of time, counted as different."""

    answers: int
    comparisons: int


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
    cached_input_tokens: int | None = None  # prompt tokens written to or read from a prompt cache (beside input_tokens)
    uncached_cost_usd: float | None = None  # what the job would have cost without prompt caching


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
    cached_input_tokens: int = 0  # prompt tokens written to or read from a prompt cache
    saved_by_cache_usd: float | None = None  # the jobs' cost without caching, less what they were billed


class Comparison(_Strict):
    """Two per-question scores on the same questions (stats.Paired): their means, the difference, its 95 %
    interval and a two-sided p-value, and how they were computed."""

    name: str
    questions: int
    a: float
    b: float
    difference: float
    low: float
    high: float
    p_value: float
    method: str


class Results(_Strict):
    task: str
    backend: str
    model: str
    config: dict[str, Any]  # the run's settings, flat, as the store keeps them (settings.RunSettings)
    questions: int  # complete questions: the ones every number below is over
    labelled_questions: int  # of those, the ones with a gold: accuracy is over these
    incomplete_questions: list[str]
    neutralised_inputs: dict[str, list[str]]  # question id -> what was neutralised in its input
    sampling_note: str | None = None  # how the paths were sampled beyond the settings (a model's default temperature)
    batch_jobs: list[BatchJob]
    on_demand_calls: list[OnDemandCalls]
    spend: Spend
    greedy: Setting | None
    sampled: list[Setting]
    groups: dict[str, list[Group]] | None = None  # task field (subject, level) -> accuracy per value
    equivalence_limits: Limits | None = None  # when answers have classes
    comparisons: list[Comparison] | None = None  # labelled runs: SC vs greedy, weighted vs majority, adaptive


def json_schema() -> dict[str, Any]:
    return Results.model_json_schema()


if __name__ == "__main__":
    print(json.dumps(json_schema(), indent=2, sort_keys=True))
