"""`run --show-prompt`: the first selected question's first request, as its backend would send it.

Nothing is generated and no store is made. Each backend says how it shows a request (its `BackendSpec.
preview`: local models the prompt text with their chat template applied, remote backends the JSON body).
"""

from __future__ import annotations

from dataclasses import replace

from .backends.base import GenerationRequest, show_body
from .experiment import plan_requests
from .preflight import check_backend_settings
from .prompts import PromptFormat
from .settings import RunSettings


def first_request(config: RunSettings) -> GenerationRequest:
    task = config.get_task()
    data = config.load(task)
    return plan_requests(config, task, replace(data, questions=data.questions[:1]))[0]


def rendered_prompt(config: RunSettings) -> str:
    spec = check_backend_settings(config)  # a mistyped --model, a temperature refused: errors here as in a run
    request = first_request(config)
    if spec.preview is not None:
        return spec.preview(config.backend_config(), request)
    # a plugin backend that declares no preview: what the Prompt itself holds
    prompt = request.prompt
    return show_body({"messages": prompt.chat_messages}) if prompt.format is PromptFormat.chat else prompt.text
