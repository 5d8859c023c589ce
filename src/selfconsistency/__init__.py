"""selfconsistency: sample many chain-of-thought paths, majority-vote the answers, measure the gain.

The pipeline, one module each: tasks -> prompts -> backends -> store -> vote -> analysis -> results -> report.
"""

from importlib import import_module

# Imported on first use, so that importing one module (a backend) does not import the whole package.
_EXPORTS = {
    "CurvePoint": ".analysis", "accuracy_curve": ".analysis", "exact_majority_accuracy": ".analysis",
    "plan_requests": ".experiment", "run_experiment": ".experiment",
    "NumberExtractor": ".extract", "build_results": ".results", "export_paths": ".export",
    "write_report": ".report", "SamplingParams": ".sampling", "path_seed": ".sampling",
    "RunSettings": ".settings", "SampleStore": ".store", "decide": ".vote", "Vote": ".vote",
    "Answer": ".answers", "answers_from_store": ".answers", "build_answer": ".answers",
    "SelfConsistency": ".api", "import_run": ".importing",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name not in _EXPORTS:
        raise AttributeError(f"module 'selfconsistency' has no attribute {name!r}")
    return getattr(import_module(_EXPORTS[name], __name__), name)
