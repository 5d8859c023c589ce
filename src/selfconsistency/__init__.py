"""selfconsistency: sample many chain-of-thought paths, majority-vote the answers, measure the gain.

The pipeline, one module each: tasks -> prompts -> backends -> store -> vote -> analysis -> results -> report.
"""

from .analysis import CurvePoint, accuracy_curve, exact_majority_accuracy
from .answers import Answer, answers_from_store, build_answer
from .api import SelfConsistency
from .experiment import RunConfig, plan_requests, run_experiment
from .export import export_paths
from .extract import NumberExtractor
from .report import write_report
from .results import build_results
from .sampling import SamplingParams, path_seed
from .store import SampleStore
from .vote import majority_vote

__all__ = [
    "Answer", "CurvePoint", "NumberExtractor", "RunConfig", "SampleStore", "SamplingParams", "SelfConsistency",
    "accuracy_curve", "answers_from_store", "build_answer", "build_results", "exact_majority_accuracy",
    "export_paths", "majority_vote", "path_seed", "plan_requests", "run_experiment", "write_report",
]
