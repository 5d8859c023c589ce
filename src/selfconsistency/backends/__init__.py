"""Backends behind one protocol (`base.Backend`); one module per provider, registered by name."""

from __future__ import annotations

from collections.abc import Callable

from .base import Backend, BackendConfig, BackendError, Generation, GenerationRequest

BackendFactory = Callable[[BackendConfig], Backend]


def _local(config: BackendConfig) -> Backend:
    from .llama_cpp import LlamaCppBackend  # imported here: llama.cpp loads only when used

    return LlamaCppBackend(config.model, threads=config.threads, batch_size=config.batch_size)


def _openai(config: BackendConfig) -> Backend:
    from .openai_compat import OpenAIBackend

    return OpenAIBackend(config)


def _bedrock_batch(config: BackendConfig) -> Backend:
    from .bedrock_batch import BedrockBatchBackend

    return BedrockBatchBackend(config)


def _openai_batch(config: BackendConfig) -> Backend:
    from .openai_batch import OpenAIBatchBackend

    return OpenAIBatchBackend(config)


def _bedrock(config: BackendConfig) -> Backend:
    from .bedrock_ondemand import BedrockOnDemandBackend

    return BedrockOnDemandBackend(config)


_REGISTRY: dict[str, BackendFactory] = {"local": _local, "openai": _openai, "openai-batch": _openai_batch,
                                        "bedrock": _bedrock, "bedrock-batch": _bedrock_batch}
BACKEND_NAMES = tuple(_REGISTRY)


def register_backend(name: str, factory: BackendFactory) -> None:
    """Make a backend available by name to RunConfig(backend=name) (plugins, test doubles)."""
    _REGISTRY[name] = factory


def create_job_service(name: str, config: BackendConfig):
    """The batch provider behind a batch backend, for job commands (status, stop) outside a run."""
    if name == "bedrock-batch":
        from .bedrock_batch import BedrockJobs

        return BedrockJobs(config)
    if name == "openai-batch":
        from .openai_batch import OpenAIBatchJobs

        return OpenAIBatchJobs(config)
    raise BackendError(f"the {name} backend runs no batch jobs")


def check_backend_name(name: str) -> None:
    """Before a run touches its directory: a mistyped backend must not be recorded as the run's."""
    if name not in _REGISTRY:
        raise BackendError(f"unknown backend {name!r}; known: {', '.join(_REGISTRY)}")


def create_backend(name: str, config: BackendConfig) -> Backend:
    try:
        factory = _REGISTRY[name]
    except KeyError:
        raise BackendError(f"unknown backend {name!r}; known: {', '.join(_REGISTRY)}") from None
    return factory(config)


__all__ = ["BACKEND_NAMES", "Backend", "BackendConfig", "BackendError", "Generation", "GenerationRequest",
           "check_backend_name", "create_backend", "register_backend"]
