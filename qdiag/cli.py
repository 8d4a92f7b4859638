"""The command line, declared in one place.  Commands live in qdiag/commands/;
this module only parses, dispatches, and turns errors into exit statuses.

Every command writes through the Environment it is given (qdiag/environment.py),
never through sys.stdout: `main(argv, env)` runs the whole CLI in-process
against fake streams, which is how the tests run it."""

from __future__ import annotations

import atexit
import dataclasses
import functools
import gc
import inspect
import logging
import os
import re
import sys
import time
from contextlib import redirect_stderr, redirect_stdout
from dataclasses import dataclass, field
from enum import Enum
from typing import Annotated, List, Optional

import typer
from typer.core import TyperCommand, TyperGroup

from qdiag import __version__, cli_values
from qdiag.brokers import BROKERS, Broker, broker_flags
from qdiag.environment import Environment
from qdiag.errors import debug_traceback, exit_status
from qdiag.exit_codes import ExitCode
from qdiag.report.emit import ReportFormat



def _quiet_flags(params: list) -> list:
    """Flags take no value and arguments are named by their metavar: show no
    Python type for either (typer would print `<bool>`, `<str>`)."""
    for param in params:
        if getattr(param, "is_flag", False) and param.metavar is None:
            param.metavar = ""
        elif param.param_type_name == "argument" and param.metavar:
            param.display_type_rich = lambda ctx: None
    return params


class _Command(TyperCommand):
    def get_params(self, ctx):
        return cli_values.install(_quiet_flags(super().get_params(ctx)))


class _Group(TyperGroup):
    def get_params(self, ctx):
        return cli_values.install(_quiet_flags(super().get_params(ctx)))


CONTEXT = {"help_option_names": ["-h", "--help"]}

def _examples(*lines: str) -> str:
    """An epilog of example command lines (typer keeps single line breaks in rich mode)."""
    return "Examples:\n" + "\n".join(f"  $ {line}" for line in lines)


def _env_name(broker: Broker) -> str:
    return f"QDIAG_{broker.name.upper()}"


def _broker_examples(command: str, rest: str) -> list[str]:
    """One example per registered broker: its flag, or, when its URL carries a password, its
    variable set from a secret (a password on the command line ends up in shell history,
    process listings and CI logs)."""
    return [f'{_env_name(b)}="${b.name.upper()}_URL" qdiag {command} {rest}' if "@" in b.example
            else f"qdiag {command} {b.flag} {b.example} {rest}" for b in BROKERS.values()]


app = typer.Typer(
    name="qdiag",
    cls=_Group,
    help="Find out why a queue is backing up: queue depth and consumer lag on the brokers, the consumers, "
         "where their threads wait, their host and their dependencies, ranked into possible root causes.",
    epilog=_examples("qdiag investigate", *_broker_examples("investigate", "--queue orders")[:2],
                     "qdiag snapshot -o incident.json.gz", "qdiag report incident.json.gz",
                     "qdiag explain consumer-stuck")
           + f"\n\nBrokers: {broker_flags()}, or "
           + ", ".join(_env_name(b) for b in BROKERS.values())
           + ". Settings also come from QDIAG_* environment variables and qdiag.toml (see each command's --help). "
           "Colour follows NO_COLOR and FORCE_COLOR. Exit codes: 0 when the output was produced, 3 on a "
           "usage, configuration or probing error; check: 0 OK, 1 WARNING, 2 CRITICAL, 3 UNKNOWN.",
    no_args_is_help=True,
    add_completion=True,
    pretty_exceptions_enable=False,
    rich_markup_mode="rich",
    context_settings=CONTEXT,
)
playbooks_app = typer.Typer(help="List or validate diagnosis playbooks.", no_args_is_help=True, cls=_Group,
                            rich_markup_mode="rich", context_settings=CONTEXT)
app.add_typer(playbooks_app, name="playbooks")


@dataclass
class Invocation:
    """What every command gets through the click context's `obj`."""

    env: Environment
    argv: list[str] = field(default_factory=lambda: ["qdiag"])  # recorded in snapshots (redacted)
    debug: bool = False
    log_handler: logging.Handler | None = None
    # Monotonic moment the run began (the process's start for the CLI): --timeout counts from it.
    started: float = field(default_factory=time.monotonic)


def _invocation(ctx: typer.Context) -> Invocation:
    return ctx.find_object(Invocation)


class CheckFormat(str, Enum):
    text = "text"
    json = "json"


class Verdict(str, Enum):
    healthy = "healthy"
    degraded = "degraded"


# --- options shared by the commands that probe ------------------------------------------
# Help strings are rich markup: a literal "[" followed by a letter is written "\[".
# envvar names the QDIAG_* variable qdiag/config.py reads for the same setting, so
# that --help lists it; the value itself is read by config.py, which owns the
# precedence (flag > variable > config file) and the comma-separated lists.
T, R, O, D, F = "Targets", "Run", "Output", "Diagnosis", "Fleet"


# A rich markup tag: "[" then a lower-case letter, "#", "/" or "@", up to the next "]".
_MARKUP_TAG = re.compile(r"(\\*)(\[[a-z#/@][^[]*?])")


def _escape_markup(text: str) -> str:
    """Text that rich's help shows as is: a backslash before each "[" that would open a tag
    (doubling the backslashes already there), and a lone trailing backslash doubled.  rich.markup
    has this; importing it costs 25 ms of every run, not only of --help."""
    text = _MARKUP_TAG.sub(lambda m: m.group(1) * 2 + "\\" + m.group(2), text)
    return text + "\\" if text.endswith("\\") and not text.endswith("\\\\") else text


def _broker_parameter(broker: Broker) -> inspect.Parameter:
    """The option of one registered broker (--kafka, --rabbitmq, ...), from its registry row."""
    metavar = "URL" if "://" in broker.example else "HOST:PORT"
    option = typer.Option(broker.flag, metavar=metavar, envvar=_env_name(broker), rich_help_panel=T,
                          help=_escape_markup(f"{broker.help} E.g. {broker.example}"))
    return inspect.Parameter(broker.name.replace("-", "_"), inspect.Parameter.POSITIONAL_OR_KEYWORD, default=None,
                             annotation=Annotated[Optional[str], option])


def _with_broker_options(command):
    """Give a probing command one option per registered broker.  typer reads a command's options
    from its signature, so the signature is generated here: the command itself takes them as one
    `brokers` dict {name: value or None}, and a broker added to qdiag/brokers.py gets its flag
    without touching this module."""
    signature = inspect.signature(command, eval_str=True)
    params = list(signature.parameters.values())
    own = [p for p in params if p.name != "brokers"]
    names = {b.name.replace("-", "_"): b.name for b in BROKERS.values()}

    @functools.wraps(command)
    def with_brokers(*args, **kwargs):
        return command(*args, brokers={name: kwargs.pop(param, None) for param, name in names.items()}, **kwargs)

    with_brokers.__signature__ = signature.replace(
        parameters=[own[0], *(_broker_parameter(b) for b in BROKERS.values()), *own[1:]])
    return with_brokers


_GLOBS = [b.flag for b in BROKERS.values() if b.takes_globs]
_GLOB_HELP = ("; globs allowed" if len(_GLOBS) == len(BROKERS)
              else f"; globs allowed for {', '.join(_GLOBS)}" if _GLOBS else "")
Queues = Annotated[Optional[List[str]], typer.Option("--queue", metavar="NAME", envvar="QDIAG_QUEUES", rich_help_panel=T,
                                                     help=f"Focus on this topic, queue, stream or list{_GLOB_HELP} "
                                                          "(repeatable).")]
Groups = Annotated[Optional[List[str]], typer.Option("--group", metavar="NAME", envvar="QDIAG_GROUPS", rich_help_panel=T,
                                                     help="Consumer group of a topic or stream (repeatable).")]
# A process id is checked by config.py (one message for flag, variable and file).
Pids = Annotated[Optional[List[str]], typer.Option("--pid", metavar="PID", envvar="QDIAG_PIDS", rich_help_panel=T,
                                                   help="Consumer process id (repeatable).")]
Processes = Annotated[Optional[List[str]], typer.Option("--process", metavar="REGEX", envvar="QDIAG_PROCESSES",
                                                        rich_help_panel=T,
                                                        help="Consumer processes whose command line matches (repeatable).")]
ConnectedTo = Annotated[Optional[List[str]], typer.Option("--connected-to", metavar="HOST:PORT", envvar="QDIAG_CONNECTED_TO",
                                                         rich_help_panel=T,
                                                         help="Consumer processes: those connected to HOST:PORT, a "
                                                              "broker's client port (repeatable; on consumer hosts).")]
Dependencies = Annotated[Optional[List[str]], typer.Option("--dependency", metavar="URL", envvar="QDIAG_DEPENDENCIES",
                                                           rich_help_panel=T,
                                                           help="Downstream endpoint: http(s)://, tcp://host:port, "
                                                                "or a database, cache or broker URL (postgres://, "
                                                                "mysql://, ...) (repeatable).")]
Logs = Annotated[Optional[List[str]], typer.Option("--log", metavar="GLOB", envvar="QDIAG_LOGS", rich_help_panel=T,
                                                   help="Log files to scan for overflow and rejection messages "
                                                        "(repeatable).")]
Window = Annotated[Optional[float], typer.Option("--window", metavar="SECONDS", envvar="QDIAG_WINDOW", rich_help_panel=R,
                                                 help="Sampling window (default 5).")]
Timeout = Annotated[Optional[float], typer.Option("--timeout", metavar="SECONDS", envvar="QDIAG_TIMEOUT", rich_help_panel=R,
                                                  help="Deadline for the whole run; longer than the window (default 30).")]
ProbeTimeout = Annotated[Optional[float], typer.Option("--probe-timeout", metavar="SECONDS", envvar="QDIAG_PROBE_TIMEOUT",
                                                       rich_help_panel=R,
                                                       help="Seconds every probe may take beyond the window "
                                                            "(default: each probe's own, see 'qdiag probes').")]
OnlyProbes = Annotated[Optional[List[str]], typer.Option("--probe", metavar="NAME", rich_help_panel=R,
                                                         help="Run only this probe (repeatable); see 'qdiag probes'.")]
SkipProbes = Annotated[Optional[List[str]], typer.Option("--no-probe", metavar="NAME", rich_help_panel=R,
                                                         help="Do not run this probe (repeatable).")]
AutoDetect = Annotated[Optional[bool], typer.Option("--auto-detect/--no-auto-detect", envvar="QDIAG_AUTO_DETECT",
                                                    rich_help_panel=R,
                                                    help="Look for brokers on this host's default ports even when a "
                                                         "broker is named (by default only when none is); "
                                                         "--no-auto-detect never looks.")]
Config = Annotated[Optional[str], typer.Option("--config", metavar="FILE", envvar="QDIAG_CONFIG", rich_help_panel=R,
                                               help="Config file (default ./qdiag.toml, else "
                                                    "~/.config/qdiag/qdiag.toml).")]
Debug = Annotated[bool, typer.Option("--debug", rich_help_panel=R, help="Log to stderr and show tracebacks.")]
Format = Annotated[ReportFormat, typer.Option("--format", "-f", rich_help_panel=O,
                                              help="text for people, markdown for tickets, json for tools.")]
Output = Annotated[Optional[str], typer.Option("--output", "-o", metavar="FILE", rich_help_panel=O,
                                               help="Write the report to FILE (atomically); - for stdout.")]
Ascii = Annotated[bool, typer.Option("--ascii", rich_help_panel=O,
                                     help="Plain ASCII text even on a terminal (always so off a terminal).")]
NoPager = Annotated[bool, typer.Option("--no-pager", rich_help_panel=O,
                                       help="Do not page a long report on a terminal (or QDIAG_PAGER=cat).")]
Playbooks = Annotated[Optional[List[str]], typer.Option("--playbook", metavar="FILE", rich_help_panel=D,
                                                        help="Extra playbook; its rules add to or replace built-in "
                                                             "ones (repeatable).")]
Baseline = Annotated[Optional[str], typer.Option("--baseline", metavar="SNAPSHOT", rich_help_panel=D,
                                                 help="A snapshot from normal times, to compare rates against.")]


# Parameter names of the probing commands -> settings keys (qdiag/config.py); the
# brokers' come from the registry (their settings key is their name).
_PROBE_FLAGS = {"queue": "queues", "group": "groups", "pid": "pids", "process": "processes",
                "connected_to": "connected_to",
                "dependency": "dependencies", "log": "logs", "window": "window", "timeout": "timeout",
                "probe_timeout": "probe_timeout", "probe": "only_probes", "no_probe": "skip_probes",
                "config": "config", "debug": "debug", "auto_detect": "auto_detect"}


def _settings(ctx: typer.Context, params: dict):
    """Settings from a probing command's parameters (its locals(): the brokers' values in `brokers`)."""
    from qdiag import config

    run = _invocation(ctx)
    if params.get("debug"):
        _enable_debug(run)
    values = {**params, **{name.replace("-", "_"): value for name, value in params["brokers"].items()}}
    names = {**_PROBE_FLAGS, **{name.replace("-", "_"): name for name in BROKERS}}
    # A value click took from a QDIAG_* variable is dropped here: config.py reads the
    # same variable itself, with its own list syntax and precedence.
    flags = {key: None if _from_environment(ctx, name) else values[name] for name, key in names.items()}
    settings = config.resolve(flags, env=run.env.vars, cwd=run.env.working_dir)
    return dataclasses.replace(settings, started_at=run.started)


def _from_environment(ctx: typer.Context, name: str) -> bool:
    source = ctx.get_parameter_source(name)
    return source is not None and source.name == "ENVIRONMENT"


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
        from qdiag.redact import mask_log_record

        mask_log_record(record)  # message, traceback and the run's known secrets
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


def _presentation(ctx: typer.Context, ascii_only: bool, no_pager: bool) -> Environment:
    env = _invocation(ctx).env
    env.ascii_only = env.ascii_only or ascii_only
    env.pager = env.pager and not no_pager
    return env


@app.command(cls=_Command, epilog=_examples(
    "qdiag investigate",
    *_broker_examples("investigate", "--queue 'orders*'"),
    "qdiag investigate --group billing --window 10",
    "qdiag investigate --pid 4242 -f markdown -o report.md",
    "qdiag investigate --snapshot incident.json.gz --baseline normal.json.gz",
    "qdiag investigate --queue jobs --collect ssh://web-1,web-2"))
@_with_broker_options
def investigate(
    ctx: typer.Context,
    brokers: dict, queue: Queues = None, group: Groups = None,
    pid: Pids = None, process: Processes = None, connected_to: ConnectedTo = None, dependency: Dependencies = None,
    log: Logs = None,
    window: Window = None, timeout: Timeout = None, probe_timeout: ProbeTimeout = None, probe: OnlyProbes = None,
    no_probe: SkipProbes = None, auto_detect: AutoDetect = None, config: Config = None, debug: Debug = False,
    format: Format = ReportFormat.text, output: Output = None, ascii_only: Ascii = False, no_pager: NoPager = False,
    playbook: Playbooks = None, baseline: Baseline = None,
    save: Annotated[Optional[str], typer.Option("--snapshot", metavar="FILE", rich_help_panel=O,
                                                help="Also save the snapshot this report was built from.")] = None,
    collect: Annotated[Optional[List[str]], typer.Option("--collect", metavar="TARGET",
                                                         rich_help_panel=F,
                                                         help="ssh://HOST\\[,HOST...] or kubectl://NAMESPACE/SELECTOR: "
                                                              "also take a snapshot on each consumer host or pod "
                                                              "(system ssh or kubectl) and diagnose all together "
                                                              "(repeatable).")] = None,
    collect_command: Annotated[Optional[str], typer.Option("--collect-command", metavar="CMD", rich_help_panel=F,
                                                           help="How qdiag is run on the targets (default: qdiag; "
                                                                "e.g. 'python3 qdiag.pyz').")] = None,
    kube_context: Annotated[Optional[str], typer.Option("--kube-context", metavar="NAME", rich_help_panel=F,
                                                        help="kubectl context for kubectl:// targets.")] = None,
    kube_container: Annotated[Optional[str], typer.Option("--kube-container", metavar="NAME", rich_help_panel=F,
                                                          help="Container of the pods to run qdiag in.")] = None,
) -> None:
    """Probe everything and print the ranked root-cause report."""
    from qdiag.commands import investigate as cmd

    settings = _settings(ctx, locals())
    run = _invocation(ctx)
    fleet = {"collect": collect or [], "command": collect_command, "kube_context": kube_context,
             "kube_container": kube_container}
    cmd.run(_presentation(ctx, ascii_only, no_pager), settings, run.argv, fmt=format.value, output=output,
            playbooks=playbook or [], baseline=baseline, save=save, fleet=fleet)


@app.command(cls=_Command, epilog=_examples(
    "qdiag snapshot -o incident.json.gz",
    "qdiag snapshot --group billing -o - | ssh ops 'cat > s.json.gz'",
    "qdiag report incident.json.gz"))
@_with_broker_options
def snapshot(
    ctx: typer.Context,
    brokers: dict, queue: Queues = None, group: Groups = None,
    pid: Pids = None, process: Processes = None, connected_to: ConnectedTo = None, dependency: Dependencies = None,
    log: Logs = None,
    window: Window = None, timeout: Timeout = None, probe_timeout: ProbeTimeout = None, probe: OnlyProbes = None,
    no_probe: SkipProbes = None, auto_detect: AutoDetect = None, config: Config = None, debug: Debug = False,
    output: Annotated[Optional[str], typer.Option("--output", "-o", metavar="FILE", rich_help_panel=O,
                                                  help="Snapshot file, - for stdout "
                                                       "(default qdiag-HOST-UTCTIME.json.gz).")] = None,
) -> None:
    """Record everything observed into one gzip JSON file (mode 0600) to attach to a ticket."""
    from qdiag.commands import snapshot as cmd

    settings = _settings(ctx, locals())
    run = _invocation(ctx)
    cmd.run(run.env, settings, run.argv, output=output)


@app.command(cls=_Command, epilog=_examples(
    "qdiag report incident.json.gz",
    "qdiag report incident.json.gz -f markdown -o ticket.md",
    "qdiag report - < incident.json.gz",
    "qdiag report incident.json.gz --baseline normal.json.gz",
    "qdiag report broker.json.gz web-1.json.gz web-2.json.gz"))
def report(
    ctx: typer.Context,
    snapshot_file: Annotated[List[str], typer.Argument(metavar="SNAPSHOT...",
                                                       help="A file written by 'qdiag snapshot', or - for stdin; "
                                                            "several (one per host) make one report.")],
    format: Format = ReportFormat.text, output: Output = None, ascii_only: Ascii = False, no_pager: NoPager = False,
    playbook: Playbooks = None, baseline: Baseline = None, debug: Debug = False,
) -> None:
    """Re-render the report from a snapshot, anywhere, offline."""
    from qdiag.commands import report as cmd

    run = _invocation(ctx)
    if debug:
        _enable_debug(run)
    cmd.run(_presentation(ctx, ascii_only, no_pager), snapshot_file, fmt=format.value, output=output,
            playbooks=playbook or [], baseline=baseline)


TH = "Thresholds"


@app.command(cls=_Command, epilog=_examples(
    *_broker_examples("check", "--queue orders --max-depth 1000"),
    "qdiag check --queue 'orders*' --min-consumers 1",
    "qdiag check --queue orders --must-drain --wait 300 --junit junit.xml",
    "qdiag check --group billing --max-lag-seconds 120",
    "qdiag check --policy thresholds.toml -f json"))
@_with_broker_options
def check(
    ctx: typer.Context,
    brokers: dict, queue: Queues = None, group: Groups = None,
    pid: Pids = None, process: Processes = None, connected_to: ConnectedTo = None, dependency: Dependencies = None,
    log: Logs = None,
    window: Window = None, timeout: Timeout = None, probe_timeout: ProbeTimeout = None, probe: OnlyProbes = None,
    no_probe: SkipProbes = None, auto_detect: AutoDetect = None, config: Config = None, debug: Debug = False,
    warn_depth: Annotated[Optional[int], typer.Option("--warn-depth", metavar="N", min=0, rich_help_panel=TH,
                                                      help="WARNING when a queue's depth (or total lag) is above N.")] = None,
    max_depth: Annotated[Optional[int], typer.Option("--max-depth", metavar="N", min=0, rich_help_panel=TH,
                                                     help="CRITICAL when a queue's depth (or total lag) is above N.")] = None,
    min_consumers: Annotated[Optional[int], typer.Option("--min-consumers", metavar="N", min=0, rich_help_panel=TH,
                                                         help="CRITICAL when a queue has fewer consumers.")] = None,
    warn_fill: Annotated[Optional[float], typer.Option("--warn-fill", metavar="RATIO", min=0, max=1, rich_help_panel=TH,
                                                       help="WARNING when a limited queue is fuller than RATIO.")] = None,
    max_fill: Annotated[Optional[float], typer.Option("--max-fill", metavar="RATIO", min=0, max=1, rich_help_panel=TH,
                                                      help="CRITICAL when a limited queue is fuller than RATIO.")] = None,
    warn_lag_seconds: Annotated[Optional[float], typer.Option("--warn-lag-seconds", metavar="SECONDS", min=0,
                                                              rich_help_panel=TH,
                                                              help="WARNING when the oldest waiting message is "
                                                                   "older.")] = None,
    max_lag_seconds: Annotated[Optional[float], typer.Option("--max-lag-seconds", metavar="SECONDS", min=0,
                                                             rich_help_panel=TH,
                                                             help="CRITICAL when the oldest waiting message is "
                                                                  "older.")] = None,
    must_drain: Annotated[bool, typer.Option("--must-drain", rich_help_panel=TH,
                                             help="CRITICAL unless every queue drains (rate out >= rate in, or "
                                                  "depth falling).")] = False,
    warn_score: Annotated[Optional[float], typer.Option("--warn-score", metavar="SCORE", min=0, max=1, rich_help_panel=TH,
                                                        help="WARNING when a root cause scores above SCORE.")] = None,
    max_score: Annotated[Optional[float], typer.Option("--max-score", metavar="SCORE", min=0, max=1, rich_help_panel=TH,
                                                       help="CRITICAL when a root cause scores above SCORE.")] = None,
    allow_cause: Annotated[Optional[List[str]], typer.Option("--allow-cause", metavar="CAUSE-ID", rich_help_panel=TH,
                                                             help="Root cause that never fails the score check "
                                                                  "(repeatable).")] = None,
    max_verdict: Annotated[Optional[Verdict], typer.Option("--max-verdict", rich_help_panel=TH,
                                                           help="CRITICAL when the verdict is worse than this.")] = None,
    policy: Annotated[Optional[str], typer.Option("--policy", metavar="FILE", rich_help_panel=TH,
                                                  help="TOML file with a \\[check] table of thresholds "
                                                       "(per queue too).")] = None,
    wait: Annotated[Optional[float], typer.Option("--wait", metavar="SECONDS", min=0, rich_help_panel=R,
                                                  help="Re-check until every check passes or SECONDS have "
                                                       "passed.")] = None,
    format: Annotated[CheckFormat, typer.Option("--format", "-f", rich_help_panel=O,
                                                help="text (a line per check, Nagios perfdata) or json.")] = CheckFormat.text,
    junit: Annotated[Optional[str], typer.Option("--junit", metavar="FILE", rich_help_panel=O,
                                                 help="Also write JUnit XML (one testcase per check).")] = None,
    playbook: Playbooks = None,
) -> int:
    """Run the probes with thresholds: exit 0 OK, 1 WARNING, 2 CRITICAL, 3 UNKNOWN."""
    from qdiag.commands import check as cmd

    settings = _settings(ctx, locals())
    flags = {"warn_depth": warn_depth, "max_depth": max_depth, "min_consumers": min_consumers, "warn_fill": warn_fill,
             "max_fill": max_fill, "warn_lag_seconds": warn_lag_seconds, "max_lag_seconds": max_lag_seconds,
             "min_draining": True if must_drain else None, "warn_score": warn_score, "max_score": max_score,
             "allow": allow_cause or [], "max_verdict": max_verdict.value if max_verdict else None}
    run = _invocation(ctx)
    return cmd.run(run.env, settings, run.argv, flags=flags, policy_file=policy, fmt=format.value, junit_file=junit,
                   wait_s=wait, rules_files=playbook or [])


class ExplainFormat(str, Enum):
    text = "text"
    json = "json"


@app.command(cls=_Command, epilog=_examples("qdiag explain consumer-stuck",
                                            "qdiag explain slow-dependency --playbook ours.toml",
                                            "qdiag explain partition-skew -f json"))
def explain(
    ctx: typer.Context,
    cause: Annotated[str, typer.Argument(metavar="CAUSE-ID", help="A root-cause id, as a report names it "
                                                                   "(consumers-absent, slow-dependency, ...).")],
    format: Annotated[ExplainFormat, typer.Option("--format", "-f", rich_help_panel=O,
                                                  help="text for people, json for tools.")] = ExplainFormat.text,
    playbook: Playbooks = None,
) -> None:
    """What a root cause means, the rules that decide it (conditions, thresholds, weights) and what to do."""
    from qdiag.commands import explain as cmd

    cmd.run(_invocation(ctx).env, cause, fmt=format.value, playbooks=playbook or [])


@app.command("probes", cls=_Command, epilog=_examples("qdiag probes", "qdiag probes | grep -A3 '^threads'"))
def list_probes(ctx: typer.Context) -> None:
    """List the probes, what each needs, its default allowance beyond the window and its options."""
    from qdiag.commands import probes as cmd

    cmd.list_probes(_invocation(ctx).env)


@playbooks_app.command("list", cls=_Command, epilog=_examples("qdiag playbooks list",
                                                               "qdiag playbooks list --playbook ours.toml"))
def playbooks_list(ctx: typer.Context, playbook: Playbooks = None) -> None:
    """Show the six steps and the rules in each (built-in plus --playbook files)."""
    from qdiag.commands import playbooks as cmd

    cmd.list_rules(_invocation(ctx).env, playbook or [])


@playbooks_app.command("validate", cls=_Command, epilog=_examples("qdiag playbooks validate ours.toml",
                                                                   "qdiag playbooks validate playbooks/*.toml"))
def playbooks_validate(
    ctx: typer.Context,
    files: Annotated[List[str], typer.Argument(metavar="FILE...", help="Playbook files to check.")],
) -> None:
    """Check playbook files; errors name file:line."""
    from qdiag.commands import playbooks as cmd

    cmd.validate(_invocation(ctx).env, files)


def _discard_stdout(env: Environment) -> None:
    """After a broken pipe, send what is left of stdout nowhere, so the interpreter's last flush is quiet."""
    try:
        fd = env.stdout.fileno()
    except (AttributeError, OSError, ValueError):
        return
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, fd)
    os.close(devnull)


def main(argv: list[str] | None = None, env: Environment | None = None) -> int:
    """Entry point: run the CLI, map every failure to an exit status and one line.

    `env` replaces the process's streams, variables and working directory (tests);
    with `argv` given, the exit status is returned instead of exiting."""
    args = sys.argv[1:] if argv is None else list(argv)
    env = env or Environment()
    run = Invocation(env=env, argv=["qdiag", *args], debug="--debug" in args)
    if argv is None:  # the process itself, not a call in-process
        from qdiag import watchdog

        run.started = watchdog.process_started()
        watchdog.allow_alarm()
        # What the imports made lives until exit: keep the cyclic collector off it.  Its full
        # passes over those objects cost about 30 ms each, one of them after the window.
        gc.freeze()
    try:
        # Help and usage errors are printed by click itself, to sys.stdout/sys.stderr.
        with redirect_stdout(env.stdout), redirect_stderr(env.stderr):
            result = app(args=args, prog_name="qdiag", standalone_mode=False, obj=run)
        code = int(result) if isinstance(result, int) else ExitCode.OK
    except SystemExit as exc:  # typer.Exit inside callbacks
        code = exc.code if isinstance(exc.code, int) else ExitCode.OK
    except BrokenPipeError:
        # The reader went away (qdiag report s.json.gz | head): not qdiag's failure, nothing to say.
        _discard_stdout(env)
        code = ExitCode.OK
    except BaseException as exc:  # noqa: BLE001 - this is the one place that maps errors
        if type(exc).__name__ == "Exit" and hasattr(exc, "exit_code"):  # click's/typer's Exit
            code = exc.exit_code
        else:
            code, message = exit_status(exc)
            if run.debug:
                env.stderr.write(debug_traceback(exc))
            env.stderr.write(f"qdiag: error: {message}\n")
    finally:
        _disable_debug(run)
    try:
        env.stdout.flush()
    except BrokenPipeError:
        _discard_stdout(env)
    if argv is None:
        _leave(int(code))
    return int(code)


def _leave(code: int) -> None:
    """End the process once the report is out: flush, run the exit handlers (qdiag's own,
    logging's), then os._exit.  The interpreter's own teardown (freeing every module and
    object one by one) took 0.1-0.2 s after a broker probe, while the on-call waits for
    the prompt; probe threads are daemons and nothing else is left to finish."""
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (BrokenPipeError, OSError, ValueError):
            pass
    run_exit_handlers = getattr(atexit, "_run_exitfuncs", None)
    if run_exit_handlers is None or sys.getprofile() is not None or sys.gettrace() is not None:
        # Not CPython, or under a profiler or coverage that writes its data on the way out.
        sys.exit(code)
    run_exit_handlers()
    os._exit(code)
