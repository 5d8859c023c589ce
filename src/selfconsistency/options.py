"""How a setting is declared once: a pydantic field, plus markers saying how the CLI offers it and whether
it changes generated text (then it is part of the run's identity, and a store made without it is refused).

    top_k: Annotated[int, Field(ge=0), Cli("Sample among the k most likely tokens (0 = off).", SAMPLING),
                     Identity()] = 40

The `run` command's options, the settings' validation and the identity all follow from these fields
(`cli_fields`, `identity_of`); a field without `Cli` is a setting of the Python API only.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict
from pydantic.fields import FieldInfo

# Help panels of `run --help`, by concern.
EXPERIMENT, INPUT, SAMPLING, STOPPING, BUDGET, BACKEND_PANEL, OUTPUT = (
    "Experiment", "Untrusted input", "Sampling", "Adaptive stopping", "Budget (paid backends)", "Backend", "Output")
PANELS = (EXPERIMENT, INPUT, SAMPLING, STOPPING, BACKEND_PANEL, BUDGET, OUTPUT)  # their order in the help
SETTINGS_COMMANDS = ("run", "answer", "serve")  # the commands whose options are the settings


@dataclass(frozen=True)
class Cli:
    """How `selfconsistency run` (and `answer`, `serve`) offers a field: its help, its help panel, where the
    command line's value differs from the field's (flags, the type typed in, a parser), and which of those
    commands ignore it (`not_in`: their help does not list it, and giving it there is refused)."""

    help: str
    panel: str
    flags: tuple[str, ...] = ()  # default: --field-name
    cli_type: Any = None  # the type the command line reads (default: the field's)
    parse: Callable[[Any], Any] | None = None  # command-line value -> field value
    default_shown: str | None = None  # shown as "[default: ...]" where the real default is None
    argument: bool = False  # a positional argument rather than an option
    metavar: str | None = None  # what the value is, in the help (default: its type)
    not_in: tuple[str, ...] = ()  # commands of SETTINGS_COMMANDS that do not use the setting


@dataclass(frozen=True)
class Identity:
    """The field changes generated text: it is part of the run's identity (and its settings hash).

    `only_if_set`: recorded only when it differs from the default, so stores made before the field
    existed keep their identity. `stored`: how it is recorded (e.g. a URL without credentials)."""

    only_if_set: bool = False
    stored: Callable[[Any], Any] | None = None


def marker(field: FieldInfo, kind: type) -> Any:
    return next((m for m in field.metadata if isinstance(m, kind)), None)


def identity_of(settings: BaseModel) -> dict[str, Any]:
    """The fields of `settings` marked `Identity`, as the store records them."""
    out = {}
    for name, field in type(settings).model_fields.items():
        mark = marker(field, Identity)
        if mark is None:
            continue
        value = getattr(settings, name)
        if mark.only_if_set and value == field.get_default(call_default_factory=True):
            continue
        out[name] = mark.stored(value) if mark.stored and value is not None else value
    return out


def cli_fields(model: type[BaseModel]) -> dict[str, tuple[FieldInfo, Cli]]:
    """name -> (field, its Cli marker), for the fields a command line offers."""
    return {name: (field, mark) for name, field in model.model_fields.items()
            if (mark := marker(field, Cli)) is not None}


class BackendOptions(BaseModel):
    """A backend's own settings: each backend declares its subclass in its own module and registers it.

    Fields marked `Identity` go into the run's identity; fields marked `Cli` become `run` options."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    # Stores made before backends declared their options recorded these for every backend but `local`;
    # kept in the identity so those stores' settings hash holds.
    identity_defaults: ClassVar[dict[str, Any]] = {"base_url": None, "api": "chat"}
    # Fields naming where the backend sends the user's credentials (a server's URL): a command that acts on
    # a stored run uses them only when the user names the same endpoint again (None: the provider's own).
    endpoint_fields: ClassVar[tuple[str, ...]] = ()

    def identity(self) -> dict[str, Any]:
        return {**self.identity_defaults, **identity_of(self)}
