"""`run --show-prompt`: the first selected question's first request, as its backend would send it.

Nothing is generated and no store is made: local models get the prompt text (chat format: the model's own
chat template applied); remote backends get the JSON request body (chat APIs: with their messages).
"""

from __future__ import annotations

import json
from dataclasses import replace

from .backends.base import GenerationRequest
from .experiment import plan_requests
from .prompts import PromptFormat
from .settings import RunSettings


def first_request(config: RunSettings) -> GenerationRequest:
    task = config.get_task()
    data = config.load(task)
    return plan_requests(config, task, replace(data, questions=data.questions[:1]))[0]


def _json(body: dict) -> str:
    return json.dumps(body, indent=2, ensure_ascii=False)


def rendered_prompt(config: RunSettings) -> str:
    request = first_request(config)
    prompt, params = request.prompt, request.params
    if config.backend == "local":
        if prompt.format is not PromptFormat.chat:
            return prompt.text
        from .backends.llama_cpp import LlamaCppBackend
        from .models import check_model_name

        check_model_name(config.model)
        backend = LlamaCppBackend(config.model, threads=getattr(config.options, "threads", None))
        try:
            return backend.rendered_prompt(prompt)
        finally:
            backend.close()
    if config.backend in ("openai", "openai-batch"):
        from .backends.openai_compat import request_body

        # self-hosted servers (a --base-url) get the extra sampling fields; the Batch API is OpenAI's own
        server_fields = config.backend == "openai" and config.options.base_url is not None
        return _json(request_body(config.model, prompt, params, 1, config.options.api, server_fields))
    if config.backend in ("bedrock", "bedrock-batch"):
        from .backends.bedrock_bodies import ADAPTERS, adapter_for

        adapter = adapter_for(config.model, converse=config.options.converse)  # ValueError: an unknown model family
        if config.backend == "bedrock" and adapter.chat:  # on demand, chat families go through Converse
            adapter = ADAPTERS["converse"]
        return _json(adapter.request(prompt, params, 1))
    # a registered plugin backend: what the Prompt itself holds
    return _json({"messages": prompt.chat_messages}) if prompt.format is PromptFormat.chat else prompt.text
