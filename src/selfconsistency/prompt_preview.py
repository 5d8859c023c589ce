"""`run --show-prompt`: the first selected question's first request, as its backend would send it.

Nothing is generated and no store is made. Each backend says how it shows a request (its `BackendSpec.
preview`: local models the prompt text with their chat template applied, remote backends the JSON body).
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from .backends import backend_spec
from .backends.base import GenerationRequest, show_body
from .experiment import plan_requests
from .preflight import preflight
from .prompts import PromptFormat
from .settings import RunSettings


def first_request(config: RunSettings, run_dir: Path | None = None) -> GenerationRequest:
    """The first request of the run `run` would make in `run_dir` (default: the settings' own), after the
    checks it would make first: a plan or a run directory the run refuses is refused here in its words."""
    task = config.get_task()
    data = config.load(task)
    preflight(config, task, data, Path(run_dir) if run_dir else config.default_run_dir(task))
    return plan_requests(config, task, replace(data, questions=data.questions[:1]))[0]


def rendered_prompt(config: RunSettings, run_dir: Path | None = None) -> str:
    spec = backend_spec(config.backend)
    request = first_request(config, run_dir)
    if spec.preview is not None:
        return spec.preview(config.backend_config(), request)
    # a plugin backend that declares no preview: what the Prompt itself holds
    prompt = request.prompt
    return show_body({"messages": prompt.chat_messages}) if prompt.format is PromptFormat.chat else prompt.text
