"""Command line: serve, check, catalog, validate, report, availability, healthcheck, assets. Prometheus-style flags."""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import datetime
import json
import os
import sys
from collections.abc import Callable, Mapping, Sequence

from . import __version__
from .catalog import CATALOG, CatalogPath, Require, Role, paths_for
from .config import Config, ConfigError, load_config
from .configfile import BOUND_FLAGS, LoadBounds
from .escape import markdown, markdown_fence, visible
from .eventloop import EVENT_LOOPS, run_on_loop
from .explain import Explanation, explain_verdicts
from .explain import as_markdown as explain_markdown
from .explain import as_text as explain_text
from .headroom import SERVING_CPU_LIMIT
from .listen import ListenAddress, parse_listen_address
from .logs import setup_logging
from .plan import Skipped, build_plan
from .scrape import Outcome
from .shard import Shard, parse_shard
from .verdict import PathVerdict, target_met, verdicts_of

DEFAULT_CONFIG = "illiad.yml"
DEFAULT_LISTEN = ":9968"
VANTAGES = [r.value for r in Role]


def _add_common(parser: argparse.ArgumentParser, *, vantage: bool) -> None:
    parser.add_argument(
        "--config.file", dest="config_file", default=os.environ.get("ILLIAD_EXPORTER_CONFIG", DEFAULT_CONFIG),
        help=f"YAML config (default: $ILLIAD_EXPORTER_CONFIG or {DEFAULT_CONFIG})",
    )
    if vantage:
        parser.add_argument(
            "--vantage", choices=VANTAGES, default=os.environ.get("ILLIAD_EXPORTER_VANTAGE"),
            help="the role of the host this runs on (default: $ILLIAD_EXPORTER_VANTAGE)",
        )
        parser.add_argument(
            "--shard", type=_shard_arg, default=os.environ.get("ILLIAD_EXPORTER_SHARD") or None, metavar="I/N",
            help="probe only the sites replica I of N owns, counted from 0 (default: $ILLIAD_EXPORTER_SHARD, "
                 "else the config's exporter.shard)",
        )
        parser.add_argument(
            "--event-loop", dest="event_loop", choices=EVENT_LOOPS,
            default=os.environ.get("ILLIAD_EXPORTER_EVENT_LOOP", "auto"),
            help="auto: uvloop when installed (the [fast] extra, or pip install uvloop), else asyncio's own",
        )
    _add_load_bounds(parser)
    parser.add_argument("--log.level", dest="log_level", default="info", choices=["debug", "info", "warn", "error"])
    parser.add_argument("--log.format", dest="log_format", default="logfmt", choices=["logfmt", "json"])


def _add_load_bounds(parser: argparse.ArgumentParser) -> None:
    """--config.max-values and the other bounds on what loading the config may cost, each
    with its default from an environment variable (see Security in the README)."""
    defaults = LoadBounds()
    for flag in BOUND_FLAGS:
        shown = flag.show(getattr(defaults, flag.field))
        parser.add_argument(flag.bound.setting, dest=f"bound_{flag.field}", type=_bound_arg(flag.parse),
                            metavar=flag.metavar, default=os.environ.get(flag.bound.env) or shown,
                            help=f"{flag.help} (default: ${flag.bound.env} or {shown})")


def _bound_arg(parse: Callable[[str], object]) -> Callable[[str], object]:
    def parsed(value: str) -> object:
        try:
            return parse(value)
        except ValueError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None
    return parsed


def load_bounds(args: argparse.Namespace) -> LoadBounds:
    """The bounds the command line (and the environment) set."""
    return LoadBounds(**{flag.field: getattr(args, f"bound_{flag.field}") for flag in BOUND_FLAGS})


def _listen_arg(value: str) -> ListenAddress:
    try:
        return parse_listen_address(value)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _add_version(parser: argparse.ArgumentParser) -> None:
    # on every subcommand too: `illiad-exporter serve ... --version` answers like `--version serve`
    parser.add_argument("--version", action="version", version=f"illiad-exporter {__version__}")


def _workers_arg(value: str | int) -> int:
    if value == "auto":
        return max(os.cpu_count() or 1, 1)
    try:
        count = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number of processes or auto, got {value!r}") from None
    if not 1 <= count <= 64:
        raise argparse.ArgumentTypeError(f"the number of probe workers must be between 1 and 64, got {count}")
    return count


def _cpu_share_arg(value: str | float) -> float:
    try:
        share = float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a share of one core such as 0.75, got {value!r}") from None
    if not 0 <= share <= 1:
        raise argparse.ArgumentTypeError(f"a share of one core is between 0 and 1, got {value}")
    return share


def _shard_arg(value: str) -> Shard:
    try:
        return parse_shard(value)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="illiad-exporter",
        description="Prometheus exporter for the network paths an ILLiad installation depends on.",
    )
    _add_version(parser)
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    _serve_arguments(commands.add_parser("serve", help="serve /metrics and /probe (the default)"))
    _check_arguments(commands.add_parser(
        "check", help="probe once, print a table, exit 1 when an expectation is not met"))
    _report_arguments(commands.add_parser("report", help="merge check JSON from several vantages into one page"))
    _availability_arguments(commands.add_parser(
        "availability", help="each path's availability and outages over a past range, read from Prometheus"))
    _catalog_arguments(commands.add_parser("catalog", help="print the built-in ILLiad path catalog"))
    _add_common(commands.add_parser("validate", help="check a config file; exit 0 when valid, 1 when not"),
                vantage=False)
    _healthcheck_arguments(commands.add_parser(
        "healthcheck", help="exit 0 when the exporter at --address serves, 1 when not "
                            "(for a container HEALTHCHECK or an exec probe)"))
    _assets_arguments(commands.add_parser(
        "assets", help="write out the alert and recording rules, the Grafana dashboard "
                       "and the example configs of this version"))
    for subcommand in commands.choices.values():
        _add_version(subcommand)
    return parser


def _serve_arguments(serve: argparse.ArgumentParser) -> None:
    _add_common(serve, vantage=True)
    serve.add_argument("--web.config.file", dest="web_config_file",
                       default=os.environ.get("ILLIAD_EXPORTER_WEB_CONFIG", ""),
                       help="exporter-toolkit web config: TLS, client certificates, basic auth (webconfig.py)")
    serve.add_argument("--probe-workers", dest="probe_workers", type=_workers_arg,
                       default=os.environ.get("ILLIAD_EXPORTER_PROBE_WORKERS", "1"), metavar="N",
                       help="processes that probe (and write the path metrics), each owning a share of the sites; "
                            "1: this process alone, the default; 'auto': one per CPU. More than one pays from "
                            "a few thousand paths (see Performance in the README) "
                            "(default: $ILLIAD_EXPORTER_PROBE_WORKERS or 1)")
    serve.add_argument("--probe-workers.serving-cpu-limit", dest="serving_cpu_limit", type=_cpu_share_arg,
                       default=os.environ.get("ILLIAD_EXPORTER_SERVING_CPU_LIMIT", str(SERVING_CPU_LIMIT)),
                       metavar="SHARE",
                       help="with probe workers, a site's /probe is probed by the serving process itself while "
                            "it used less than this share of one core over the last half second (no pipe to "
                            "cross: one process's cost), by the site's worker otherwise; 0: always the worker "
                            f"(default: $ILLIAD_EXPORTER_SERVING_CPU_LIMIT or {SERVING_CPU_LIMIT})")
    serve.add_argument("--web.listen-address", dest="listen_addresses", action="append", type=_listen_arg,
                       metavar="ADDRESS",
                       help=f"address to listen on, HOST:PORT or :PORT; repeat it to serve on several "
                            f"(default: {DEFAULT_LISTEN})")


def _check_arguments(check: argparse.ArgumentParser) -> None:
    _add_common(check, vantage=True)
    check.add_argument("--output", choices=["table", "json", "markdown"], default="table",
                       help="markdown: a report to paste into a ticket (failing paths explained)")
    check.add_argument("--explain", action="store_true",
                       help="under the table, each failing path: impact, diagnosis and the firewall rule to ask for")
    check.add_argument("--site", action="append", help="only this site (repeatable)")


def _report_arguments(report: argparse.ArgumentParser) -> None:
    report.add_argument("files", nargs="+", metavar="FILE", help="output of 'check --output json', one per vantage")
    report.add_argument("--format", choices=["markdown", "html"], default="markdown")
    report.add_argument("--output-file", "-o", dest="output_file", help="write here instead of standard output")


def _catalog_arguments(catalog: argparse.ArgumentParser) -> None:
    catalog.add_argument("--vantage", choices=VANTAGES, help="only the paths that start at this role")
    catalog.add_argument("--format", choices=["table", "json", "markdown"], default="table")


def _healthcheck_arguments(health: argparse.ArgumentParser) -> None:
    health.add_argument("--address", type=_listen_arg, default=DEFAULT_LISTEN, metavar="HOST:PORT",
                        help=f"the exporter's address; no host means 127.0.0.1 (default: {DEFAULT_LISTEN})")
    health.add_argument("--web.config.file", dest="web_config_file",
                        default=os.environ.get("ILLIAD_EXPORTER_WEB_CONFIG", ""),
                        help="the exporter's web config, for its scheme (default: $ILLIAD_EXPORTER_WEB_CONFIG; "
                             "without one, HTTP then TLS is tried)")
    health.add_argument("--path", default="/-/healthy", help="what to ask for (default: /-/healthy)")
    health.add_argument("--expect-metric", dest="expect_metrics", action="append", default=[], metavar="NAME",
                        help="require a 200 whose answer has this metric (repeatable)")
    health.add_argument("--timeout", type=float, default=4.0, help="seconds (default: 4)")


def _assets_arguments(assets: argparse.ArgumentParser) -> None:
    assets.add_argument("directory", help="where to write them (alerts/, grafana/, examples/ are made in it)")
    assets.add_argument("--overwrite", action="store_true", help="replace files that are already there")


def main(argv: Sequence[str] | None = None) -> int:
    args_list = list(sys.argv[1:] if argv is None else argv)
    if not args_list or args_list[0].startswith("-") and args_list[0] not in ("-h", "--help", "--version"):
        args_list.insert(0, "serve")
    args = build_parser().parse_args(args_list)
    if args.command == "catalog":
        return cmd_catalog(args)
    if args.command == "assets":
        return cmd_assets(args)
    if args.command == "report":
        return cmd_report(args)
    if args.command == "availability":
        return cmd_availability(args)
    if args.command == "healthcheck":
        return cmd_healthcheck(args)
    setup_logging(args.log_level, args.log_format)
    if args.command == "validate":
        return cmd_validate(args)
    if not args.vantage:
        print("error: --vantage is required (or set ILLIAD_EXPORTER_VANTAGE)", file=sys.stderr)
        return 2
    if args.command == "check":
        return cmd_check(args)
    return cmd_serve(args)


# -- serve -------------------------------------------------------------------------------


def cmd_serve(args: argparse.Namespace) -> int:
    from .server import CannotListen, serve
    from .state import ExporterState
    from .workers import WorkerGone, WorkerPool

    listen_addresses = args.listen_addresses or [parse_listen_address(DEFAULT_LISTEN)]
    web_config = None
    if args.web_config_file:
        from .webconfig import load_web_config

        try:
            web_config = load_web_config(args.web_config_file)
        except ConfigError as error:
            print(f"invalid web config, not starting:\n{error}", file=sys.stderr)
            return 1

    workers = None
    if args.probe_workers > 1:
        try:  # before the event loop and any thread: on Linux this forks the workers' fork server
            workers = WorkerPool(args.probe_workers, log_level=args.log_level, log_format=args.log_format,
                                 event_loop=args.event_loop)
        except ValueError as error:
            print(f"error: {error}", file=sys.stderr)
            return 2

    async def run() -> int:
        state = ExporterState(args.config_file, Role(args.vantage), shard=args.shard, workers=workers,
                              bounds=load_bounds(args), serving_cpu_limit=args.serving_cpu_limit)
        try:
            state.load()
        except ConfigError as error:
            print(f"invalid config, not starting:\n{error}", file=sys.stderr)
            return 1
        try:
            if workers is not None:
                await state.start_workers()
            await serve(state, listen_addresses, web_config=web_config)
        except WorkerGone as error:
            print(f"error: {error}", file=sys.stderr)
            return 1
        finally:
            await state.close()  # the probe workers, once serve has answered its scrapes
        return 0

    try:
        return run_on_loop(run(), args.event_loop)
    except KeyboardInterrupt:  # Ctrl-C where the loop has no signal handlers (Windows)
        return 0
    except CannotListen as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1


# -- validate ----------------------------------------------------------------------------


def cmd_validate(args: argparse.Namespace) -> int:
    try:
        config = load_config(args.config_file, bounds=load_bounds(args))
    except ConfigError as error:
        print(error, file=sys.stderr)
        print(f"{len(error.issues)} error(s) in {args.config_file}", file=sys.stderr)
        return 1
    counts = {role.value: len(build_plan(config, role)) for role in Role}
    per_role = ", ".join(f"{role} {n}" for role, n in counts.items())
    print(f"{args.config_file}: valid; {len(config.sites)} site(s); probes per vantage: {per_role}")
    return 0


# -- healthcheck -------------------------------------------------------------------------


def cmd_healthcheck(args: argparse.Namespace) -> int:
    from .healthcheck import CERT_FILE_ENV, KEY_FILE_ENV, PASSWORD_ENV, USERNAME_ENV, check

    scheme, requires_client_cert = None, False
    if args.web_config_file:
        from .webconfig import load_web_config

        try:
            web_config = load_web_config(args.web_config_file)
        except ConfigError as error:
            print(f"unhealthy: cannot read the web config:\n{error}")
            return 1
        scheme = web_config.scheme
        requires_client_cert = web_config.model.tls_server_config.client_auth_type == "RequireAndVerifyClientCert"
    username, password = os.environ.get(USERNAME_ENV), os.environ.get(PASSWORD_ENV)
    cert_file, key_file = os.environ.get(CERT_FILE_ENV), os.environ.get(KEY_FILE_ENV)
    verdict = check(args.address, path=args.path, scheme=scheme, requires_client_cert=requires_client_cert,
                    credentials=(username, password) if username and password is not None else None,
                    client_cert=(cert_file, key_file or cert_file) if cert_file else None,
                    expect_metrics=args.expect_metrics, timeout=args.timeout)
    print(("healthy: " if verdict.healthy else "unhealthy: ") + verdict.message)
    return 0 if verdict.healthy else 1


# -- assets ------------------------------------------------------------------------------


def cmd_assets(args: argparse.Namespace) -> int:
    from pathlib import Path

    from .assets import write_assets

    try:
        written = write_assets(Path(args.directory), overwrite=args.overwrite)
    except (FileExistsError, FileNotFoundError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(f"illiad-exporter {__version__}: wrote {len(written)} files to {args.directory}")
    for path in written:
        print(f"  {path}")
    return 0


# -- check -------------------------------------------------------------------------------


def cmd_check(args: argparse.Namespace) -> int:
    """Probe once and judge every path by its verdict (verdict.py): exit 0 when every path
    meets its expectation, 1 when one fails or is unknown, 2 when no path starts here."""
    try:
        config = load_config(args.config_file, bounds=load_bounds(args))
    except ConfigError as error:
        print(error, file=sys.stderr)
        return 1
    plan = build_plan(config, Role(args.vantage), shard=args.shard)
    targets = [t for t in plan.targets if not args.site or t.site in args.site]
    skipped = [skip for skip in plan.skipped if not args.site or skip.site in args.site]
    if not targets:
        why = (f"no enabled path starts at {args.vantage}" + (f" for site {', '.join(args.site)}" if args.site else "")
               + ": nothing to check (see 'illiad-exporter catalog --vantage " + args.vantage + "')")
        if args.output == "json":
            print(json.dumps({"vantage": args.vantage, "checked_at": _utc_now(), "ok": False, "error": why,
                              "paths": [], "results": [],
                              "skipped": [dataclasses.asdict(skip) for skip in skipped]}, indent=2))
        else:
            if skipped:
                print(check_table([], skipped) + "\n")
            print(why)
        return 2
    budget = max(t.timeout for t in targets) + 1.0

    async def run() -> list[Outcome]:
        from .scrape import run_all

        return await run_all(targets, budget=budget, limiter=asyncio.Semaphore(config.exporter.max_concurrency))

    outcomes = run_on_loop(run(), args.event_loop)
    verdicts = verdicts_of(outcomes, plan.required)
    all_met = all(v.met is True for v in verdicts)
    explained = explain_verdicts(config, verdicts)
    if args.output == "json":
        print(json.dumps({"vantage": args.vantage, "checked_at": _utc_now(), "ok": all_met,
                          "paths": _paths_json(config, verdicts, explained),
                          "results": [_outcome_json(outcome) for outcome in outcomes],
                          "skipped": [dataclasses.asdict(skip) for skip in skipped]}, indent=2))
    elif args.output == "markdown":
        print(check_markdown(args.vantage, verdicts, skipped, list(explained.values())))
    else:
        print(check_table(verdicts, skipped))
        print("\n" + check_summary(args.vantage, verdicts, len(outcomes)))
        if args.explain and explained:
            print("\n" + explain_text(list(explained.values())))
    return 0 if all_met else 1


def check_summary(vantage: str, verdicts: Sequence[PathVerdict], probes: int) -> str:
    failed = sum(1 for v in verdicts if v.met is False)
    unknown = sum(1 for v in verdicts if v.met is None)
    head = f"{len(verdicts)} path(s), {probes} probe(s) from {vantage}: "
    if not failed and not unknown:
        return head + "all expectations met"
    counts = [f"{failed} failed"] if failed else []
    counts += [f"{unknown} unknown (the exporter could not judge them)"] if unknown else []
    return head + "SOME EXPECTATIONS NOT MET (" + ", ".join(counts) + ")"


def _paths_json(config: Config, verdicts: Sequence[PathVerdict],
                explained: Mapping[tuple[str, str], Explanation]) -> list[dict[str, object]]:
    out = []
    for v in verdicts:
        site = config.site(v.site)
        path = site.path(v.path) if site is not None else None
        explanation = explained.get((v.site, v.path))
        out.append({
            "site": v.site, "path": v.path, "title": path.title if path else v.path,
            "required": v.required, "expect": v.expect.value, "require": v.require.value,
            "met": v.met, "state": v.state, "summary": v.summary, "impact": path.impact if path else "",
            "targets": [{"host": c.target.host, "port": c.port, "met": c.met, "observed": c.observed,
                         "reason": c.result.reason.value if c.result and c.result.reason and not c.result.up
                         else None} for c in v.checks],
            "explanation": explanation.as_json() if explanation is not None else None,
        })
    return out


def _utc_now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")


def check_markdown(vantage: str, verdicts: Sequence[PathVerdict], skipped: Sequence[Skipped],
                   explanations: Sequence[Explanation]) -> str:
    """The check as a report to paste into a ticket: the table, then each failing path explained."""
    not_met = sum(1 for v in verdicts if v.met is not True)
    verdict = "every expectation met" if not not_met else f"{not_met} path(s) NOT as expected"
    lines = [f"## ILLiad network paths from {vantage}", "", f"Checked {_utc_now()}: {verdict}.", "",
             markdown_fence(check_table(verdicts, skipped)), ""]
    if explanations:
        lines.append(explain_markdown(explanations))
    return "\n".join(lines).rstrip() + "\n"


def _outcome_json(outcome: Outcome) -> dict[str, object]:
    target, result = outcome.target, outcome.result
    return {
        "site": target.site, "path": target.path, "host": target.host, "port": result.port or target.port,
        "prober": target.prober,
        # met: whether this target meets the path's expectation (verdict.target_met): an open
        # port whose protocol or TLS check failed does not; null when the exporter could not judge
        "expect": target.expect.value, "observed": result.observed.value, "met": target_met(target, result),
        "up": result.up, "reason": result.reason.value if result.reason else None, "detail": result.detail,
        "latency_seconds": result.connect_latency, "duration_seconds": result.duration, "phases": result.phases,
        "tls": None if result.tls is None else {"version": result.tls.version,
                                                "cert_not_after": result.tls.cert_not_after,
                                                "verified": result.tls.verified},
        "info": {fact.name: dict(fact.labels) for fact in result.infos},
        "facts": dict(result.facts),
    }


_RESULT = {True: "ok", False: "FAIL", None: "UNKNOWN"}
CHECK_COLUMNS = ("SITE", "PATH", "NEED", "EXPECT", "RESULT", "TARGET", "OBSERVED", "LATENCY", "DETAIL")


def check_table(verdicts: Sequence[PathVerdict], skipped: Sequence[Skipped] = ()) -> str:
    """One row per path with its verdict, then one row per target (PATH left empty) as detail."""
    rows: list[Sequence[str]] = [CHECK_COLUMNS]
    for v in verdicts:
        expect = v.expect.value + (" (any)" if v.require is Require.ANY and len(v.checks) > 1 else "")
        rows.append((v.site, v.path, "required" if v.required else "optional", expect, _RESULT[v.met], "", "",
                     "", v.headline))
        for c in v.checks:
            r = c.result
            latency = f"{r.connect_latency * 1000:.1f} ms" if r is not None and r.connect_latency is not None else "-"
            rows.append(("", "", "", "", _RESULT[c.met], c.endpoint, c.observed, latency, c.why[:80]))
    for skip in skipped:
        rows.append((skip.site, skip.path, "", "", "skipped", "-", "-", "-", skip.why))
    return _table(rows)


def _table(rows: Sequence[Sequence[str]]) -> str:
    """Aligned columns; what a config says is shown with its control characters escaped."""
    rows = [[visible(cell) for cell in row] for row in rows]
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip() for row in rows)


# -- report ----------------------------------------------------------------------------


def cmd_report(args: argparse.Namespace) -> int:
    import time

    from .report import ReportError, as_html, as_markdown, build_matrix, load_runs

    try:
        matrix = build_matrix(load_runs(args.files))
    except ReportError as error:  # bad input: exit 2, as for bad arguments
        print(f"error: {error}", file=sys.stderr)
        return 2
    render = as_html if args.format == "html" else as_markdown
    _write_output(render(matrix, now=time.time()), args.output_file)
    return 0


# -- availability ------------------------------------------------------------------------


def _availability_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--prometheus", required=True, metavar="URL", help="Prometheus' base URL, e.g. "
                        "http://prometheus:9090 (it must load alerts/illiad-availability.rules.yml)")
    when = parser.add_argument_group("range (default: the last 30 days)")
    when.add_argument("--since", metavar="DURATION", help="the last DURATION up to --to, e.g. 30d, 7d, 12h")
    when.add_argument("--from", dest="start", metavar="TIME", help="start: 2026-11-01, 2026-11-01T02:00Z or a "
                      "Unix timestamp (UTC unless it names its offset)")
    when.add_argument("--to", dest="end", metavar="TIME", help="end (default: now)")
    parser.add_argument("--site", help="only this site")
    parser.add_argument("--step", metavar="DURATION", help="resolution of outage starts and ends (default: the "
                        "scrape interval, read from the records)")
    parser.add_argument("--output", choices=["text", "markdown", "html", "json"], default="text")
    parser.add_argument("--output-file", "-o", dest="output_file", help="write here instead of standard output")
    auth = parser.add_argument_group("access to Prometheus")
    auth.add_argument("--basic-auth-user", dest="username", metavar="USER")
    auth.add_argument("--basic-auth-password-file", dest="password_file", metavar="FILE")
    auth.add_argument("--bearer-token-file", dest="bearer_token_file", metavar="FILE")
    auth.add_argument("--ca-file", dest="ca_file", metavar="FILE", help="CA certificates for an https:// URL")
    auth.add_argument("--timeout", type=float, default=30.0, help="seconds per request (default: 30)")


def cmd_availability(args: argparse.Namespace) -> int:
    import time

    from .availability import (RENDERERS, AvailabilityError, PrometheusAccess, PrometheusClient, measure,
                               parse_duration, parse_time)

    try:
        if args.since and args.start:
            raise AvailabilityError("give --since or --from, not both")
        end = parse_time(args.end) if args.end else time.time()
        start = parse_time(args.start) if args.start else end - parse_duration(args.since or "30d")
        step = parse_duration(args.step) if args.step else None
        access = PrometheusAccess(args.prometheus, args.username, args.password_file, args.bearer_token_file,
                                  args.ca_file, args.timeout)
        report = measure(PrometheusClient(access), start, end, site=args.site, step=step)
    except (AvailabilityError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    _write_output(RENDERERS[args.output](report), args.output_file)
    return 0


def _write_output(text: str, output_file: str | None) -> None:
    """A page or report to --output-file when given, else to standard output."""
    if output_file:
        with open(output_file, "w", encoding="utf-8") as out:
            out.write(text)
    else:
        sys.stdout.write(text)


# -- catalog -----------------------------------------------------------------------------


def _catalog_rows(paths: Sequence[CatalogPath]) -> list[dict[str, str]]:
    rows = []
    for path in paths:
        routes = "; ".join(f"{source.value} -> {', '.join(str(to) for to in targets)}"
                           for source, targets in path.routes.items())
        rows.append({
            "id": path.id, "title": path.title, "routes": routes, "ports": ", ".join(str(port) for port in path.ports),
            "prober": path.prober, "need": "required" if path.required else "optional", "expect": path.expect.value,
            "require": path.require.value, "default": "on" if path.enabled_by_default else "off",
            "impact": path.impact, "source": "; ".join(str(cited) for cited in path.source), "notes": path.notes,
        })
    return rows


def cmd_catalog(args: argparse.Namespace) -> int:
    paths = paths_for(Role(args.vantage)) if args.vantage else CATALOG
    rows = _catalog_rows(paths)
    if args.format == "json":
        print(json.dumps([
            {**row, "ports": [int(x) for x in row["ports"].split(", ")],
             "source": [{"source": c.source.value, "fact": c.fact} for c in path.source]}
            for row, path in zip(rows, paths)
        ], indent=2))
    elif args.format == "markdown":
        keys = list(rows[0])
        print("| " + " | ".join(keys) + " |")
        print("|" + " --- |" * len(keys))
        for row in rows:
            print("| " + " | ".join(markdown(row[k]) for k in keys) + " |")
    else:
        keys = ["id", "routes", "ports", "prober", "need", "expect", "require", "default"]
        print(_table([[k.upper() for k in keys]] + [[row[k] for k in keys] for row in rows]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
