"""The command line, declared in one place.  Commands live in qdiag/commands/;
this module only parses, dispatches, and turns errors into exit statuses.

Every command writes through the Environment it is given (qdiag/environment.py),
never through sys.stdout: `main(argv, env)` runs the whole CLI in-process
against fake streams, which is how the tests run it."""

from __future__ import annotations

import logging
import sys
from contextlib import redirect_stderr, redirect_stdout
from dataclasses import dataclass, field
from typing import Annotated, List, Optional

import typer


from qdiag import __version__
from qdiag.environment import Environment
from qdiag.errors import exit_status
from qdiag.exit_codes import ExitCode

app = typer.Typer(
    name="qdiag",
    help="Find out why a queue is backing up: Kafka lag, RabbitMQ depth, Redis streams and job lists, "
         "the consumers, their host and their dependencies, ranked into possible root causes.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
)
playbooks_app = typer.Typer(help="List or validate diagnosis playbooks.", no_args_is_help=True)
app.add_typer(playbooks_app, name="playbooks")



@dataclass
class Invocation:
    """What every command gets through the click context's `obj`."""

    env: Environment
    argv: list[str] = field(default_factory=lambda: ["qdiag"])  # recorded in snapshots (redacted)
    debug: bool = False
    log_handler: logging.Handler | None = None


def _invocation(ctx: typer.Context) -> Invocation:
    return ctx.find_object(Invocation)


# --- options shared by the commands that probe ------------------------------------------
Kafka = Annotated[Optional[str], typer.Option("--kafka", help="Kafka bootstrap servers HOST:PORT[,HOST:PORT].", rich_help_panel="Targets")]
Rabbit = Annotated[Optional[str], typer.Option("--rabbitmq", help="RabbitMQ: management API http(s)://user:pass@host:15672, or amqp://user:pass@host:5672/vhost.", rich_help_panel="Targets")]
Redis = Annotated[Optional[str], typer.Option("--redis", help="Redis URL redis://[user:pass@]host:6379/db (rediss:// for TLS).", rich_help_panel="Targets")]
Queues = Annotated[Optional[List[str]], typer.Option("--queue", help="Focus on this topic, queue, stream or list (repeatable).", rich_help_panel="Targets")]
Groups = Annotated[Optional[List[str]], typer.Option("--group", help="Kafka consumer group or Redis stream group (repeatable).", rich_help_panel="Targets")]
Pids = Annotated[Optional[List[int]], typer.Option("--pid", help="Consumer process id (repeatable).", rich_help_panel="Targets")]
Processes = Annotated[Optional[List[str]], typer.Option("--process", help="Regex matched against command lines to find consumer processes (repeatable).", rich_help_panel="Targets")]
Dependencies = Annotated[Optional[List[str]], typer.Option("--dependency", help="Downstream endpoint: http(s)://, tcp://host:port, postgres://, mysql://, redis://, amqp:// (repeatable).", rich_help_panel="Targets")]
Logs = Annotated[Optional[List[str]], typer.Option("--log", help="Log file glob to scan for overflow messages (repeatable).", rich_help_panel="Targets")]
Window = Annotated[Optional[float], typer.Option("--window", help="Sampling window in seconds [default: 5].", rich_help_panel="Run")]
Timeout = Annotated[Optional[float], typer.Option("--timeout", help="Deadline for the whole run in seconds [default: 30].", rich_help_panel="Run")]
ProbeTimeout = Annotated[Optional[float], typer.Option("--probe-timeout", help="Seconds each probe may take beyond the window (overrides probe defaults).", rich_help_panel="Run")]
OnlyProbes = Annotated[Optional[List[str]], typer.Option("--probe", help="Run only this probe (repeatable); see 'qdiag probes'.", rich_help_panel="Run")]
SkipProbes = Annotated[Optional[List[str]], typer.Option("--no-probe", help="Do not run this probe (repeatable).", rich_help_panel="Run")]
NoAuto = Annotated[bool, typer.Option("--no-auto-detect", help="Do not look for brokers on this host's default ports.", rich_help_panel="Run")]
Config = Annotated[Optional[str], typer.Option("--config", help="Config file [default: ./qdiag.toml, else ~/.config/qdiag/qdiag.toml].", rich_help_panel="Run")]
Debug = Annotated[bool, typer.Option("--debug", help="Log to stderr and show tracebacks.", rich_help_panel="Run")]
Format = Annotated[str, typer.Option("--format", "-f", help="Report format: text, json or markdown.", rich_help_panel="Output")]
Output = Annotated[Optional[str], typer.Option("--output", "-o", help="Write the report to FILE instead of stdout.", rich_help_panel="Output")]
Playbooks = Annotated[Optional[List[str]], typer.Option("--playbook", help="Extra playbook file; its rules add to or replace built-in ones (repeatable).", rich_help_panel="Diagnosis")]
Baseline = Annotated[Optional[str], typer.Option("--baseline", help="Snapshot taken in normal times, to compare rates against.", rich_help_panel="Diagnosis")]


# Parameter names of the probing commands -> settings keys (qdiag/config.py).
_PROBE_FLAGS = {"kafka": "kafka", "rabbitmq": "rabbitmq", "redis": "redis", "queue": "queues", "group": "groups",
                "pid": "pids", "process": "processes", "dependency": "dependencies", "log": "logs",
                "window": "window", "timeout": "timeout", "probe_timeout": "probe_timeout", "probe": "only_probes",
                "no_probe": "skip_probes", "config": "config", "debug": "debug"}


def _settings(ctx: typer.Context, params: dict):
    """Settings from a probing command's parameters (its locals())."""
    from qdiag import config

    run = _invocation(ctx)
    if params.get("debug"):
        _enable_debug(run)
    flags = {key: params[name] for name, key in _PROBE_FLAGS.items()}
    flags["auto_detect"] = False if params.get("no_auto_detect") else None
    return config.resolve(flags, env=run.env.vars, cwd=run.env.working_dir)


def _enable_debug(run: Invocation) -> None:
    run.debug = True
    if run.log_handler is not None:
        return
    handler = logging.StreamHandler(run.env.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s %(name)s %(levelname)s %(message)s"))
    handler.addFilter(_RedactingFilter())
    root = logging.getLogger("qdiag")
    root.addHandler(handler)
    root.setLevel(logging.DEBUG)
    run.log_handler = handler


def _disable_debug(run: Invocation) -> None:
    if run.log_handler is not None:
        root = logging.getLogger("qdiag")
        root.removeHandler(run.log_handler)
        root.setLevel(logging.NOTSET)
        run.log_handler = None


class _RedactingFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        from qdiag.redact import Redactor

        record.msg = Redactor()(record.getMessage())
        record.args = ()
        return True


@app.callback(invoke_without_command=True)
def _root(
    ctx: typer.Context,
    version: Annotated[bool, typer.Option("--version", help="Print the version and exit.")] = False,
    debug: Debug = False,
) -> None:
    run = _invocation(ctx)
    if version:
        run.env.stdout.write(f"qdiag {__version__}\n")
        raise typer.Exit(0)
    if debug:
        _enable_debug(run)
    if ctx.invoked_subcommand is None:
        run.env.stdout.write(ctx.get_help() + "\n")


@app.command()
def investigate(
    ctx: typer.Context,
    kafka: Kafka = None, rabbitmq: Rabbit = None, redis: Redis = None, queue: Queues = None, group: Groups = None,
    pid: Pids = None, process: Processes = None, dependency: Dependencies = None, log: Logs = None,
    window: Window = None, timeout: Timeout = None, probe_timeout: ProbeTimeout = None, probe: OnlyProbes = None,
    no_probe: SkipProbes = None, no_auto_detect: NoAuto = False, config: Config = None, debug: Debug = False,
    format: Format = "text", output: Output = None, playbook: Playbooks = None, baseline: Baseline = None,
    save: Annotated[Optional[str], typer.Option("--snapshot", help="Also save the snapshot this report was built from.", rich_help_panel="Output")] = None,
) -> None:
    """Probe everything and print the ranked root-cause report."""
    from qdiag.commands import investigate as cmd

    settings = _settings(ctx, locals())
    run = _invocation(ctx)
    cmd.run(run.env, settings, run.argv, fmt=format, output=output, playbooks=playbook or [], baseline=baseline,
            save=save)


@app.command()
def snapshot(
    ctx: typer.Context,
    kafka: Kafka = None, rabbitmq: Rabbit = None, redis: Redis = None, queue: Queues = None, group: Groups = None,
    pid: Pids = None, process: Processes = None, dependency: Dependencies = None, log: Logs = None,
    window: Window = None, timeout: Timeout = None, probe_timeout: ProbeTimeout = None, probe: OnlyProbes = None,
    no_probe: SkipProbes = None, no_auto_detect: NoAuto = False, config: Config = None, debug: Debug = False,
    output: Annotated[Optional[str], typer.Option("--output", "-o", help="Snapshot file [default: qdiag-<host>-<UTC time>.json.gz].", rich_help_panel="Output")] = None,
) -> None:
    """Record everything observed into one gzip JSON file (mode 0600) to attach to a ticket."""
    from qdiag.commands import snapshot as cmd

    settings = _settings(ctx, locals())
    run = _invocation(ctx)
    cmd.run(run.env, settings, run.argv, output=output)


@app.command()
def report(
    ctx: typer.Context,
    snapshot_file: Annotated[str, typer.Argument(metavar="SNAPSHOT", help="A file written by 'qdiag snapshot'.")],
    format: Format = "text", output: Output = None, playbook: Playbooks = None, baseline: Baseline = None,
    debug: Debug = False,
) -> None:
    """Re-render the report from a snapshot, anywhere, offline."""
    from qdiag.commands import report as cmd

    run = _invocation(ctx)
    if debug:
        _enable_debug(run)
    cmd.run(run.env, snapshot_file, fmt=format, output=output, playbooks=playbook or [], baseline=baseline)


@app.command()
def check(
    ctx: typer.Context,
    kafka: Kafka = None, rabbitmq: Rabbit = None, redis: Redis = None, queue: Queues = None, group: Groups = None,
    pid: Pids = None, process: Processes = None, dependency: Dependencies = None, log: Logs = None,
    window: Window = None, timeout: Timeout = None, probe_timeout: ProbeTimeout = None, probe: OnlyProbes = None,
    no_probe: SkipProbes = None, no_auto_detect: NoAuto = False, config: Config = None, debug: Debug = False,
    warn_depth: Annotated[Optional[float], typer.Option("--warn-depth", help="WARNING when a queue's depth (or total lag) is above N.", rich_help_panel="Thresholds")] = None,
    max_depth: Annotated[Optional[float], typer.Option("--max-depth", help="CRITICAL when a queue's depth (or total lag) is above N.", rich_help_panel="Thresholds")] = None,
    min_consumers: Annotated[Optional[float], typer.Option("--min-consumers", help="CRITICAL when a queue has fewer consumers.", rich_help_panel="Thresholds")] = None,
    warn_fill: Annotated[Optional[float], typer.Option("--warn-fill", help="WARNING when a limited queue is fuller than RATIO (0..1).", rich_help_panel="Thresholds")] = None,
    max_fill: Annotated[Optional[float], typer.Option("--max-fill", help="CRITICAL when a limited queue is fuller than RATIO (0..1).", rich_help_panel="Thresholds")] = None,
    warn_lag_seconds: Annotated[Optional[float], typer.Option("--warn-lag-seconds", help="WARNING when the oldest waiting message is older than S.", rich_help_panel="Thresholds")] = None,
    max_lag_seconds: Annotated[Optional[float], typer.Option("--max-lag-seconds", help="CRITICAL when the oldest waiting message is older than S.", rich_help_panel="Thresholds")] = None,
    must_drain: Annotated[bool, typer.Option("--must-drain", help="CRITICAL unless every queue drains (rate out >= rate in, or depth falling).", rich_help_panel="Thresholds")] = False,
    warn_score: Annotated[Optional[float], typer.Option("--warn-score", help="WARNING when a root cause scores above X (0..1).", rich_help_panel="Thresholds")] = None,
    max_score: Annotated[Optional[float], typer.Option("--max-score", help="CRITICAL when a root cause scores above X (0..1).", rich_help_panel="Thresholds")] = None,
    allow_cause: Annotated[Optional[List[str]], typer.Option("--allow-cause", help="Root-cause id that never fails the score check (repeatable).", rich_help_panel="Thresholds")] = None,
    max_verdict: Annotated[Optional[str], typer.Option("--max-verdict", help="CRITICAL when the verdict is worse: healthy or degraded.", rich_help_panel="Thresholds")] = None,
    policy: Annotated[Optional[str], typer.Option("--policy", help="TOML file with a [check] table of thresholds (per queue too).", rich_help_panel="Thresholds")] = None,
    wait: Annotated[Optional[float], typer.Option("--wait", help="Re-check until every check passes or SECONDS have passed.", rich_help_panel="Run")] = None,
    format: Annotated[str, typer.Option("--format", "-f", help="Output: text (with perfdata) or json.", rich_help_panel="Output")] = "text",
    junit: Annotated[Optional[str], typer.Option("--junit", help="Also write JUnit XML (one testcase per check) to FILE.", rich_help_panel="Output")] = None,
    playbook: Playbooks = None,
) -> int:
    """Run the probes with thresholds: exit 0 OK, 1 WARNING, 2 CRITICAL, 3 UNKNOWN."""
    from qdiag.commands import check as cmd

    settings = _settings(ctx, locals())
    flags = {"warn_depth": warn_depth, "max_depth": max_depth, "min_consumers": min_consumers, "warn_fill": warn_fill,
             "max_fill": max_fill, "warn_lag_seconds": warn_lag_seconds, "max_lag_seconds": max_lag_seconds,
             "min_draining": True if must_drain else None, "warn_score": warn_score, "max_score": max_score,
             "allow": allow_cause or [], "max_verdict": max_verdict}
    run = _invocation(ctx)
    return cmd.run(run.env, settings, run.argv, flags=flags, policy_file=policy, fmt=format, junit_file=junit,
                   wait_s=wait, rules_files=playbook or [])


@app.command("probes")
def list_probes(ctx: typer.Context) -> None:
    """List the probes, what each needs, its default allowance beyond the window and its options."""
    from qdiag.commands import probes as cmd

    cmd.list_probes(_invocation(ctx).env)


@playbooks_app.command("list")
def playbooks_list(ctx: typer.Context, playbook: Playbooks = None) -> None:
    """Show the six steps and the rules in each (built-in plus --playbook files)."""
    from qdiag.commands import playbooks as cmd

    cmd.list_rules(_invocation(ctx).env, playbook or [])


@playbooks_app.command("validate")
def playbooks_validate(
    ctx: typer.Context,
    files: Annotated[List[str], typer.Argument(metavar="FILE...", help="Playbook files to check.")],
) -> None:
    """Check playbook files; errors name file:line."""
    from qdiag.commands import playbooks as cmd

    cmd.validate(_invocation(ctx).env, files)


def main(argv: list[str] | None = None, env: Environment | None = None) -> int:
    """Entry point: run the CLI, map every failure to an exit status and one line.

    `env` replaces the process's streams, variables and working directory (tests);
    with `argv` given, the exit status is returned instead of exiting."""
    args = sys.argv[1:] if argv is None else list(argv)
    env = env or Environment()
    run = Invocation(env=env, argv=["qdiag", *args], debug="--debug" in args)
    try:
        # Help and usage errors are printed by click itself, to sys.stdout/sys.stderr.
        with redirect_stdout(env.stdout), redirect_stderr(env.stderr):
            result = app(args=args, prog_name="qdiag", standalone_mode=False, obj=run)
        code = int(result) if isinstance(result, int) else ExitCode.OK
    except SystemExit as exc:  # typer.Exit inside callbacks
        code = exc.code if isinstance(exc.code, int) else ExitCode.OK
    except BaseException as exc:  # noqa: BLE001 - this is the one place that maps errors
        if type(exc).__name__ == "Exit" and hasattr(exc, "exit_code"):  # click's/typer's Exit
            code = exc.exit_code
        else:
            code, message = exit_status(exc)
            if run.debug:
                import traceback

                traceback.print_exception(exc, file=env.stderr)
            env.stderr.write(f"qdiag: error: {message}\n")
    finally:
        _disable_debug(run)
    env.stdout.flush()
    if argv is None:
        sys.exit(int(code))
    return int(code)
