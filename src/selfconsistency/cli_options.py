"""The `run`, `answer` and `serve` commands' options, made from the settings' declarations (`options.Cli`
on each field of the settings groups and of every registered backend's options model): each setting is
declared once, and a backend's option appears here because its module declares it. A setting a command
ignores (`Cli.not_in`) is left out of its help and refused there with a one-line error."""

from __future__ import annotations

import inspect
import types
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Annotated, Any

import annotated_types
import typer
from pydantic.fields import FieldInfo

from .backends import backend_specs
from .options import BACKEND_PANEL, PANELS, SETTINGS_COMMANDS, Cli
from .settings import declared_settings as declared_options
from .settings import unused_settings

_SHOWN_MAX = 1_000  # larger upper bounds only catch typos (--paths 100000000): checked, not shown in the help


def limits(metadata: Iterable[Any]) -> dict[str, Any]:
    """A declaration's inclusive bounds (a field's metadata, or an Annotated type's) as typer's min/max:
    the command line checks and shows them (exclusive ones, and upper bounds past _SHOWN_MAX, are left to the
    settings' validation, which refuses them in one line too)."""
    limits = {}
    flat = [m for item in metadata for m in (item.metadata if isinstance(item, FieldInfo) else [item])]
    for constraint in flat:
        if isinstance(constraint, annotated_types.Ge):
            limits["min"] = constraint.ge
        elif isinstance(constraint, annotated_types.Le) and constraint.le <= _SHOWN_MAX:
            limits["max"] = constraint.le
    return limits


_METAVARS = {int: "N", float: "X", str: "TEXT", Path: "PATH"}  # short: the help stays readable at 80 columns


def _plain(annotation: Any) -> Any:
    """`int | None` -> int."""
    args = [a for a in getattr(annotation, "__args__", ()) if a is not type(None)]
    return args[0] if len(args) == 1 and isinstance(annotation, types.UnionType) else annotation


def _parameter(name: str, field: FieldInfo, mark: Cli, backend_help: str) -> inspect.Parameter:
    help_text = mark.help + (backend_help if name == "backend" else "")
    if mark.default_shown:
        help_text += f" \\[default: {mark.default_shown}]"
    # A parsed setting is read as typed, and left out when not given: the settings' default holds.
    default = None if mark.parse else field.get_default(call_default_factory=True)
    cli_type = mark.cli_type or field.annotation
    if mark.parse or (default is None and mark.cli_type is not None):
        cli_type = cli_type | None
    flags = mark.flags
    if cli_type is bool and default is False and not flags:
        flags = (f"--{name.replace('_', '-')}",)  # an off switch: no --no-X beside it (keeps the help narrow)
    metavar = mark.metavar or _METAVARS.get(mark.cli_type or _plain(field.annotation))
    if mark.argument:
        info = typer.Argument(help=help_text, metavar=name.upper())
    else:
        info = typer.Option(*flags, help=help_text, rich_help_panel=mark.panel, metavar=metavar,
                            **limits(field.metadata))
    return inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=default,
                             annotation=Annotated[cli_type, info])


def option_flag(name: str, mark: Cli) -> str:
    """The option a setting is typed as (its first flag)."""
    return mark.flags[0].split("/")[0] if mark.flags else f"--{name.replace('_', '-')}"


def _refused(name: str, field: FieldInfo, mark: Cli) -> inspect.Parameter:
    """A hidden option that takes whatever is typed, so that giving it gets the command's own one-line
    refusal rather than click's usage error ("No such option", a bad value)."""
    flag = option_flag(name, mark)
    if _plain(field.annotation) is bool and not mark.cli_type:
        info = typer.Option(f"{flag}/--no-{flag.removeprefix('--')}", hidden=True)
        return inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=None,
                                 annotation=Annotated[bool | None, info])
    info = typer.Option(*(mark.flags or (flag,)), hidden=True)
    return inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=None, annotation=Annotated[str | None, info])


def declared_option(name: str, help: str | None = None, flag: str | None = None) -> Any:
    """A command's own option for the declared setting `name` (e.g. simulate's --min-paths): its bounds from
    the declaration, and its flags and help too unless `flag` and `help` say what it is to this command."""
    field, mark = declared_options()[name]
    flags = (flag,) if flag else mark.flags or (f"--{name.replace('_', '-')}",)
    return typer.Option(*flags, help=help or mark.help, **limits(field.metadata))


def settings_command(body: Callable[..., None], extra: list[inspect.Parameter],
                     fail: Callable[[str], Exception], command: str) -> Callable[..., None]:
    """`body(settings_values, **extra)` as the typer command `command` whose options are the declared
    settings it uses plus `extra` (command-only switches). `settings_values` holds the settings given,
    parsed; a value its parser refuses, or a setting the command ignores, raises `fail(message)`."""
    if command not in SETTINGS_COMMANDS:
        raise ValueError(f"{command!r} is not one of {SETTINGS_COMMANDS}")
    declared = declared_options()
    ignored = unused_settings(command)
    specs = backend_specs()
    backend_help = " " + "; ".join(f"{name}: {spec.summary}" for name, spec in specs.items() if spec.summary) + "."
    order = {panel: rank for rank, panel in enumerate(PANELS)}
    backends_rank = order[BACKEND_PANEL] + 0.5  # each backend's own panel follows the backend's choice
    ranked = sorted(declared.items(), key=lambda item: order.get(item[1][1].panel, backends_rank))  # stable
    parameters = [_refused(name, field, mark) if name in ignored else _parameter(name, field, mark, backend_help)
                  for name, (field, mark) in ranked]

    def run_command(ctx: typer.Context, **values: Any) -> None:
        settings_values = {}
        for name, (_, mark) in declared.items():
            value = values.pop(name)
            # Only what was typed: a default is the settings' own (and another backend's default is no option
            # of this one's).
            source = ctx.get_parameter_source(name)
            if value is None or (source is not None and source.name == "DEFAULT"):
                continue
            if name in ignored:
                flag = option_flag(name, mark) if value is not False else f"--no-{option_flag(name, mark)[2:]}"
                users = " and ".join(f"'{c}'" for c in ignored[name])
                raise fail(f"{flag} does not apply to '{command}' (it is an option of {users}); "
                           f"see 'selfconsistency {command} --help'")
            try:
                settings_values[name] = mark.parse(value) if mark.parse else value
            except ValueError as exc:
                raise fail(str(exc)) from None
        body(settings_values, **values)

    context = inspect.Parameter("ctx", inspect.Parameter.POSITIONAL_OR_KEYWORD, annotation=typer.Context)
    run_command.__signature__ = inspect.Signature([context, *parameters, *extra])
    run_command.__doc__ = body.__doc__
    run_command.__name__ = body.__name__
    return run_command
