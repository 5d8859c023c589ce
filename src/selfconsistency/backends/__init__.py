"""Backends behind one protocol (`base.Backend`); one module per provider, registered by name.

Each module declares its `BACKEND = BackendSpec(factory, options model, job service)`; the registry below
names the module, which is imported only when the backend (or the list of every option) is needed.
"""

from __future__ import annotations

from importlib import import_module

from ..options import BackendOptions
from .base import Backend, BackendConfig, BackendError, BackendSpec, Generation, GenerationRequest

_BUILTIN = {"local": ".llama_cpp", "openai": ".openai_compat", "openai-batch": ".openai_batch",
            "bedrock": ".bedrock_ondemand", "bedrock-batch": ".bedrock_batch", "anthropic": ".anthropic",
            "anthropic-batch": ".anthropic_batch"}
_REGISTRY: dict[str, BackendSpec | str] = dict(_BUILTIN)
BACKEND_NAMES = tuple(_BUILTIN)


def register_backend(name: str, factory, options: type[BackendOptions] = BackendOptions,
                     job_service=None, summary: str = "", **capabilities) -> None:
    """Make a backend available by name to RunSettings(backend=name) (plugins, test doubles);
    `capabilities`: BackendSpec's other fields (shared_decoder=True, on_demand="openai", ...)."""
    _REGISTRY[name] = BackendSpec(factory, options, job_service, summary, **capabilities)


def backend_spec(name: str) -> BackendSpec:
    try:
        entry = _REGISTRY[name]
    except KeyError:
        raise BackendError(f"unknown backend {name!r}; known: {', '.join(_REGISTRY)}") from None
    if isinstance(entry, str):
        entry = _REGISTRY[name] = import_module(entry, __name__).BACKEND
    return entry


def backend_specs() -> dict[str, BackendSpec]:
    """Every registered backend, imported."""
    return {name: backend_spec(name) for name in list(_REGISTRY)}


def check_backend_name(name: str) -> None:
    """Before a run touches its directory: a mistyped backend must not be recorded as the run's."""
    backend_spec(name)


def create_backend(name: str, config: BackendConfig) -> Backend:
    return backend_spec(name).factory(config)


def create_job_service(name: str, config: BackendConfig):
    """The batch provider behind a batch backend, for job commands (status, stop) outside a run."""
    service = backend_spec(name).job_service
    if service is None:
        raise BackendError(f"the {name} backend runs no batch jobs")
    return service(config)


__all__ = ["BACKEND_NAMES", "Backend", "BackendConfig", "BackendError", "BackendSpec", "Generation",
           "GenerationRequest", "backend_spec", "backend_specs", "check_backend_name", "create_backend",
           "create_job_service", "register_backend"]
