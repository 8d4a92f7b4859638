"""The command line, declared in one place.  Commands live in qdiag/commands/;
this module only parses, dispatches, and turns errors into exit statuses."""

from __future__ import annotations

import logging
import sys
from typing import Annotated, List, Optional

import typer


from qdiag import __version__
from qdiag.errors import debug_traceback, exit_status
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

_STATE = {"debug": False, "argv": ["qdiag"]}

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


def _settings(params: dict):
    """Settings from a probing command's parameters (its locals())."""
    from qdiag import config

    if params.get("debug"):
        _enable_debug()
    flags = {key: params[name] for name, key in _PROBE_FLAGS.items()}
    flags["auto_detect"] = False if params.get("no_auto_detect") else None
    return config.resolve(flags)


def _enable_debug() -> None:
    _STATE["debug"] = True
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s %(name)s %(levelname)s %(message)s"))
    handler.addFilter(_RedactingFilter())
    root = logging.getLogger("qdiag")
    root.addHandler(handler)
    root.setLevel(logging.DEBUG)


class _RedactingFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        from qdiag.redact import mask_log_record

        mask_log_record(record)  # message, traceback and the run's known secrets
        return True


@app.callback(invoke_without_command=True)
def _root(
    ctx: typer.Context,
    version: Annotated[bool, typer.Option("--version", help="Print the version and exit.")] = False,
    debug: Debug = False,
) -> None:
    if version:
        print(f"qdiag {__version__}")
        raise typer.Exit(0)
    if debug:
        _enable_debug()
    if ctx.invoked_subcommand is None:
        print(ctx.get_help())


@app.command()
def investigate(
    kafka: Kafka = None, rabbitmq: Rabbit = None, redis: Redis = None, queue: Queues = None, group: Groups = None,
    pid: Pids = None, process: Processes = None, dependency: Dependencies = None, log: Logs = None,
    window: Window = None, timeout: Timeout = None, probe_timeout: ProbeTimeout = None, probe: OnlyProbes = None,
    no_probe: SkipProbes = None, no_auto_detect: NoAuto = False, config: Config = None, debug: Debug = False,
    format: Format = "text", output: Output = None, playbook: Playbooks = None, baseline: Baseline = None,
    save: Annotated[Optional[str], typer.Option("--snapshot", help="Also save the snapshot this report was built from.", rich_help_panel="Output")] = None,
) -> None:
    """Probe everything and print the ranked root-cause report."""
    from qdiag.commands import investigate as cmd

    settings = _settings(locals())
    cmd.run(settings, _STATE["argv"], fmt=format, output=output, playbooks=playbook or [], baseline=baseline,
            save=save)


@app.command()
def snapshot(
    kafka: Kafka = None, rabbitmq: Rabbit = None, redis: Redis = None, queue: Queues = None, group: Groups = None,
    pid: Pids = None, process: Processes = None, dependency: Dependencies = None, log: Logs = None,
    window: Window = None, timeout: Timeout = None, probe_timeout: ProbeTimeout = None, probe: OnlyProbes = None,
    no_probe: SkipProbes = None, no_auto_detect: NoAuto = False, config: Config = None, debug: Debug = False,
    output: Annotated[Optional[str], typer.Option("--output", "-o", help="Snapshot file [default: qdiag-<host>-<UTC time>.json.gz].", rich_help_panel="Output")] = None,
) -> None:
    """Record everything observed into one gzip JSON file (mode 0600) to attach to a ticket."""
    from qdiag.commands import snapshot as cmd

    settings = _settings(locals())
    cmd.run(settings, _STATE["argv"], output=output)


@app.command()
def report(
    snapshot_file: Annotated[str, typer.Argument(metavar="SNAPSHOT", help="A file written by 'qdiag snapshot'.")],
    format: Format = "text", output: Output = None, playbook: Playbooks = None, baseline: Baseline = None,
    debug: Debug = False,
) -> None:
    """Re-render the report from a snapshot, anywhere, offline."""
    from qdiag.commands import report as cmd

    if debug:
        _enable_debug()
    cmd.run(snapshot_file, fmt=format, output=output, playbooks=playbook or [], baseline=baseline)


@app.command()
def check(
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

    settings = _settings(locals())
    flags = {"warn_depth": warn_depth, "max_depth": max_depth, "min_consumers": min_consumers, "warn_fill": warn_fill,
             "max_fill": max_fill, "warn_lag_seconds": warn_lag_seconds, "max_lag_seconds": max_lag_seconds,
             "min_draining": True if must_drain else None, "warn_score": warn_score, "max_score": max_score,
             "allow": allow_cause or [], "max_verdict": max_verdict}
    return cmd.run(settings, _STATE["argv"], flags=flags, policy_file=policy, fmt=format, junit_file=junit,
                   wait_s=wait, rules_files=playbook or [])


@app.command("probes")
def list_probes() -> None:
    """List the probes, what each needs and its default allowance beyond the window."""
    from qdiag.probe import all_probes

    for probe in all_probes().values():
        needs = ", ".join(probe.needs) if probe.needs else "always"
        print(f"{probe.name:<14} needs: {needs:<22} +{probe.timeout_s:g}s  {probe.description}")


@playbooks_app.command("list")
def playbooks_list(playbook: Playbooks = None) -> None:
    """Show the six steps and the rules in each (built-in plus --playbook files)."""
    from qdiag.commands import playbooks as cmd

    cmd.list_rules(playbook or [])


@playbooks_app.command("validate")
def playbooks_validate(
    files: Annotated[List[str], typer.Argument(metavar="FILE...", help="Playbook files to check.")],
) -> None:
    """Check playbook files; errors name file:line."""
    from qdiag.commands import playbooks as cmd

    cmd.validate(files)


def main(argv: list[str] | None = None) -> int:
    """Entry point: run the CLI, map every failure to an exit status and one line."""
    args = sys.argv[1:] if argv is None else list(argv)
    _STATE["debug"] = "--debug" in args
    _STATE["argv"] = ["qdiag", *args]  # recorded in snapshots (redacted)
    try:
        result = app(args=args, prog_name="qdiag", standalone_mode=False)
        code = int(result) if isinstance(result, int) else ExitCode.OK
    except SystemExit as exc:  # typer.Exit inside callbacks
        code = exc.code if isinstance(exc.code, int) else ExitCode.OK
    except BaseException as exc:  # noqa: BLE001 - this is the one place that maps errors
        if type(exc).__name__ == "Exit" and hasattr(exc, "exit_code"):  # click's/typer's Exit
            code = exc.exit_code
        else:
            code, message = exit_status(exc)
            if _STATE["debug"]:
                print(debug_traceback(exc), file=sys.stderr, end="")
            print(f"qdiag: error: {message}", file=sys.stderr)
    if argv is None:
        sys.exit(int(code))
    return int(code)
