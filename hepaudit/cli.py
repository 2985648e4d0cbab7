"""The ``hepaudit`` command line: click commands, parsing and printing only.

Exit codes (docs/contract.md): 0 the audit completed (an explainer may have failed: its
status says so); 1 the audit could not run or a ``[gates]`` rule failed; 2 bad usage or
bad config. Errors are one or two lines, no traceback unless ``--debug``.
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
import textwrap
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import click

from hepaudit import __version__
from hepaudit.errors import HepauditError, OutputError, pointed_at


def _fail(exc: HepauditError, debug: bool) -> None:
    if debug:
        import traceback

        traceback.print_exception(exc)
    click.echo(f"hepaudit: error: {exc}", err=True)
    sys.exit(exc.exit_code)


@contextlib.contextmanager
def quiet_libraries(debug: bool) -> Iterator[None]:
    """Libraries' own chatter (numpy's RuntimeWarnings, matplotlib's, Dask's log lines) stays off
    the terminal unless ``--debug``: what a user must know is in the summary and the report."""
    if debug:
        yield
        return
    import logging

    names = ("distributed", "dask", "matplotlib")
    levels = {name: logging.getLogger(name).level for name in names}
    os.environ.setdefault("HEPAUDIT_QUIET_WORKERS", "1")  # Dask workers started from here stay quiet too
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            for name in names:
                logging.getLogger(name).setLevel(logging.ERROR)
            yield
    finally:
        for name, level in levels.items():
            logging.getLogger(name).setLevel(level)


def _host(ctx: click.Context) -> Any:
    from hepaudit.plugins import PluginHost

    return PluginHost(disable=ctx.obj.get("disable", ()) if ctx.obj else ())


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, "--version", prog_name="hepaudit")
@click.option("--disable", "disable", multiple=True, metavar="PLUGIN",
              help="Block a plugin by name (repeatable); also HEPAUDIT_DISABLE_PLUGINS=a,b.")
@click.pass_context
def cli(ctx: click.Context, disable: tuple[str, ...]) -> None:
    """Audit ONNX jet taggers on ROOT data: which inputs matter, do methods agree,
    how the network is used inside, and is the data unlike the training data."""
    ctx.ensure_object(dict)
    ctx.obj["disable"] = disable


class _AuditCommand(click.Command):
    """``audit --help`` ends with the installed explainers (loaded only when help is shown)."""

    def format_epilog(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        try:
            names = sorted(_host(ctx.parent or ctx).explainers().classes)
        except Exception:  # help must show even when a plugin is broken
            names = []
        if names:
            with formatter.section("Explainers"):
                formatter.write_text(", ".join(names) + ". `hepaudit explainers NAME` lists one's options; "
                                     "docs/config.md every key.")


@cli.command(cls=_AuditCommand)
@click.argument("config", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), default=Path("hepaudit-report"),
              show_default=True, help="Output folder for report.json, report.html, figures/, per_jet.root.")
@click.option("--explainer", "explainers", multiple=True, metavar="NAME", help="Run only this explainer (repeatable).")
@click.option("--max-jets", type=click.IntRange(min=0), default=None, help="Audit at most N jets.")
@click.option("--seed", type=int, default=None, help="Seed for stochastic explainers.")
@click.option("--force", is_flag=True, help="Overwrite a non-empty output folder.")
@click.option("--debug", is_flag=True, help="Show tracebacks.")
@click.option("--quiet", "-q", is_flag=True, help="No progress bars and no summary.")
@click.option("--executor", type=click.Choice(["local", "dask"]), default=None,
              help="Where the chunk loop runs (default: the config's execution.executor).")
@click.option("--scheduler", default=None, metavar="ADDRESS",
              help="Dask scheduler address, e.g. tcp://host:8786 (implies --executor dask).")
@click.option("--workers", type=click.IntRange(min=1), default=None,
              help="Start a local Dask cluster of N worker processes (implies --executor dask).")
@click.pass_context
def audit(ctx: click.Context, config: Path, out: Path, explainers: tuple[str, ...], max_jets: int | None,
          seed: int | None, force: bool, debug: bool, quiet: bool, executor: str | None, scheduler: str | None,
          workers: int | None) -> None:
    """Run the audit described by CONFIG (a TOML file)."""
    from hepaudit.audit import audit as run_audit

    try:
        with quiet_libraries(debug):
            report = run_audit(config, out=out, explainers=explainers or None, max_jets=max_jets, seed=seed,
                               force=force, disable=ctx.obj["disable"], progress=False if quiet else None,
                               debug=debug, executor=executor, scheduler=scheduler, workers=workers,
                               warn=False)
    except HepauditError as exc:
        _fail(exc, debug)
        return
    except KeyboardInterrupt:
        click.echo("hepaudit: interrupted; no report written (an earlier one in --out is untouched)", err=True)
        sys.exit(130)
    if not quiet:
        click.echo(_summary(report, out, debug), err=True)
    if not report.gates_passed:
        for gate in report.gates:
            if not gate.passed:
                click.echo(f"hepaudit: gate failed: {gate.message}", err=True)
        sys.exit(1)


def _summary(report: Any, out: Path, debug: bool = False) -> str:
    from hepaudit.report.notebook import headline_auc, headline_numbers

    auc = headline_auc(report)
    lines = [f"audited {report.data['n_jets']} jets with {Path(report.model['path']).name}"
             + (f"; {auc}" if auc else "")]
    for name, result in report.explainers.items():
        line = f"  {name:<14} {result.status:<8} {result.runtime_s:7.1f} s"
        if result.status != "ok" and debug:  # the whole message, with its traceback
            line += "\n" + "\n".join("      " + row for row in str(result.error).splitlines())
        elif result.status != "ok":
            line += f"  {str(result.error).splitlines()[0][:100]}"
        else:
            numbers = headline_numbers(result.fields)
            if result.feature_importance:
                numbers.append("top: " + ", ".join(s.feature for s in result.feature_importance[:3]))
            line += ("  " + "; ".join(numbers)) if numbers else ""
        lines.append(line)
    shown = {f.text for f in report.findings}
    if report.findings:
        lines.append("findings:")
        # one line each, whole: the terminal wraps, and a CI log stays greppable
        lines += [f"  {finding.level.upper():<7} {finding.text}" for finding in report.findings]
    lines += [f"  warning: {warning}" for warning in [w for w in report.warnings if w not in shown][:5]]
    lines.append(f"report: {out / 'report.html'}")
    return "\n".join(lines)


def _service_commands() -> None:
    """``serve`` and ``submit`` (their heavy imports wait until they run)."""
    from hepaudit.service.commands import serve, submit

    cli.add_command(serve)
    cli.add_command(submit)


_service_commands()


@cli.command()
@click.argument("a", type=click.Path(path_type=Path))
@click.argument("b", type=click.Path(path_type=Path))
@click.option("--out", "-o", type=click.Path(file_okay=False, path_type=Path), default=Path("hepaudit-diff"),
              show_default=True, help="Folder for diff.json and diff.html.")
@click.option("--fail-on-change", is_flag=True,
              help="Exit 1 when something changed beyond the intervals (for CI when a new model version lands).")
@click.option("--debug", is_flag=True, help="Show tracebacks.")
def diff(a: Path, b: Path, out: Path, fail_on_change: bool, debug: bool) -> None:
    """Compare two audits A and B (report folders or report.json files): a model v1 and v2 on
    the same jets, or one model on two samples. Exit 0, 1 with --fail-on-change when something
    changed significantly, 2 for bad usage."""
    from hepaudit.diff import diff_reports, load_report, write_diff

    try:
        file_a, doc_a = load_report(a)
        file_b, doc_b = load_report(b)
        result = diff_reports(doc_a, doc_b, str(file_a), str(file_b))
        write_diff(result, out)
    except HepauditError as exc:
        _fail(exc, debug)
        return
    except OSError as exc:
        _fail(OutputError(f"{out}: cannot write the diff ({exc.strerror or exc})"), debug)
        return
    auc = result["baseline_auc"]
    lines = [f"A: {file_a}", f"B: {file_b}"]
    if auc["a"] is not None and auc["b"] is not None:
        lines.append(f"AUC {auc['a']:.4f} → {auc['b']:.4f}" + (
            f" (Δ = {auc['delta']:+.4f}, ± {auc['tolerance']:.4f} combined)" if auc["tolerance"] is not None else ""))
    for name, ranking in result["explainers"].items():
        tau = ranking["kendall_tau"]
        lines.append(f"  {name:<14} τ = {tau:.2f}" if tau is not None else f"  {name:<14} τ = —")
        lines[-1] += f"  changed: {', '.join(c['feature'] for c in ranking['changed'][:5]) or 'none'}"
    lines += textwrap.wrap("changed: " + "; ".join(result["changes"]), width=110, subsequent_indent="  ") \
        if result["changed"] else ["no change beyond the intervals"]
    lines.append(f"diff: {out / 'diff.html'}")
    click.echo("\n".join(lines), err=True)
    if fail_on_change and result["changed"]:
        sys.exit(1)


@cli.command()
@click.argument("file", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.option("--debug", is_flag=True, help="Show tracebacks.")
def inspect(file: Path, as_json: bool, debug: bool) -> None:
    """Show what is in an .onnx model or a .root file."""
    from hepaudit.inspection import inspect_path

    try:
        info, text = inspect_path(file)
    except HepauditError as exc:
        _fail(pointed_at(exc), debug)  # everything that fails here is in the file given
        return
    click.echo(json.dumps(info, indent=2) if as_json else text)


@cli.command()
@click.option("--model", "model", required=True, type=click.Path(dir_okay=False, path_type=Path),
              help="The .onnx tagger.")
@click.option("--data", "data", required=True, type=click.Path(dir_okay=False, path_type=Path), help="A .root file.")
@click.option("--tree", default=None, help="Tree name (default: the file's only or largest tree).")
@click.option("--out", "-o", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Write the config to this file, its paths relative to the file's folder "
                   "(default: print it, paths relative to the current folder).")
@click.option("--force", is_flag=True, help="Overwrite an existing --out file.")
@click.option("--debug", is_flag=True, help="Show tracebacks.")
def init(model: Path, data: Path, tree: str | None, out: Path | None, force: bool, debug: bool) -> None:
    """Print (or write with --out) a starter audit config for MODEL on DATA, saying what it could not guess."""
    from hepaudit.starter import starter_config

    if out is not None and out.exists() and not force:
        click.echo(f"hepaudit: {out} exists; choose another --out or add --force", err=True)
        sys.exit(2)
    try:
        text, notes = starter_config(model, data, tree, base=out.resolve().parent if out is not None else None)
    except HepauditError as exc:
        _fail(pointed_at(exc), debug)  # everything that fails here is in the files given
        return
    if out is None:
        click.echo(text)
    else:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(text + "\n")
    for note in notes:
        click.echo(f"hepaudit init: {note}", err=True)
    if out is not None:
        click.echo(f"hepaudit init: wrote {out}; run: hepaudit audit {out}", err=True)


@cli.command()
@click.option("--all", "show_all", is_flag=True, help="Also list hooks, modules and recipes.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.pass_context
def plugins(ctx: click.Context, show_all: bool, as_json: bool) -> None:
    """List installed plugins and the explainers and recipes they provide."""
    try:
        host = _host(ctx)
        infos = host.info()
    except HepauditError as exc:
        _fail(exc, False)
        return
    if as_json:
        rows = [i.to_dict() if show_all else {"name": i.name, "version": i.version, "explainers": i.explainers}
                for i in infos]
        click.echo(json.dumps(rows, indent=2))
        return
    for info in infos:
        kind = "built-in" if info.builtin else "installed"
        provides = ", ".join(info.explainers + [f"recipe:{r}" for r in info.recipes]) or "-"
        click.echo(f"{info.name:<22} {info.version:<10} {kind:<10} {provides}")
        if show_all:
            click.echo(f"    module: {info.module}")
            click.echo(f"    hooks:  {', '.join(info.hooks)}")
            for name, details in info.explainer_details.items():
                kind = "ranks features" if details["attribution"] else "no ranking"
                needs = f"; needs {', '.join(details['needs'])}" if details["needs"] else ""
                click.echo(f"    {name}: {details['description']} ({kind}{needs})")
    if host.disabled:
        click.echo(f"disabled: {', '.join(host.disabled)}")


@cli.command("explainers")
@click.argument("name", required=False)
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.pass_context
def explainers_command(ctx: click.Context, name: str | None, as_json: bool) -> None:
    """List every explainer with its description, or NAME's options with their defaults."""
    from hepaudit.config_docs import option_docs
    from hepaudit.plugins import _details

    try:
        host = _host(ctx)
        registry = host.explainers()
        names = [name] if name else sorted(registry.classes)
        classes = {n: host.explainer_class(n) for n in names}  # an unknown name: exit 2, with close matches
    except HepauditError as exc:
        _fail(exc, False)
        return
    rows = []
    for n, cls in classes.items():
        details = _details(cls)
        rows.append({"name": n, "plugin": host.plugin_of(n)["name"], **details,
                     "options": [vars(d) for d in option_docs(cls.Options)]})
    if as_json:
        click.echo(json.dumps(rows if name is None else rows[0], indent=2))
        return
    if name is None:
        for row in rows:
            click.echo(f"{row['name']:<14} {row['description']}")
        click.echo("\nhepaudit explainers NAME: its options; docs/config.md: every key.")
        return
    row = rows[0]
    kind = "ranks features" if row["attribution"] else "no feature ranking"
    needs = f"; needs {', '.join(row['needs'])}" if row["needs"] else ""
    click.echo(f"{row['name']}: {row['description']}\n  plugin {row['plugin']}; {kind}{needs}")
    if not row["options"]:
        click.echo(f"\n[explainers.{row['name']}] takes no options.")
        return
    click.echo(f"\noptions of [explainers.{row['name']}], with their defaults:")
    for option in row["options"]:
        click.echo(f"  {option['key']} = {option['default']}    ({option['type']})")
        if option["help"]:
            click.echo(f"      {option['help']}")


def _terminated(signum: int, frame: object) -> None:
    """SIGTERM (a batch system's kill, ``timeout``) unwinds like Ctrl-C: temporary files and
    the staging folder are removed, an earlier report stays."""
    click.echo("hepaudit: terminated; no report written (an earlier one in --out is untouched)", err=True)
    raise SystemExit(128 + signum)


def main(argv: list[str] | None = None) -> None:
    """Console entry point: adds plugin commands, then runs the click group."""
    import signal

    signal.signal(signal.SIGTERM, _terminated)
    args = sys.argv[1:] if argv is None else argv
    disable = [args[i + 1] for i, a in enumerate(args[:-1]) if a == "--disable"]
    if args[:1] == ["--version"]:  # a CI job's first check: no plugin is needed to say the version
        cli.main(args=args, prog_name="hepaudit")
    from hepaudit.data import constituents

    constituents.VECTOR_WITHOUT_SYMPY = True  # this process is the command's own
    try:
        from hepaudit.plugins import PluginHost

        host = PluginHost(disable=disable)
        problems = host.register_commands(cli)
        host.recipes(), host.explainers()  # a broken plugin is found (and left out) now, not mid-command
        if "audit" not in args:  # an audit lists them among its report's warnings
            for problem in host.problems + problems:
                click.echo(f"hepaudit: warning: {problem}", err=True)
    except HepauditError as exc:
        click.echo(f"hepaudit: error: {exc}", err=True)
        sys.exit(exc.exit_code)
    try:
        cli.main(args=args, prog_name="hepaudit")
    except KeyboardInterrupt:
        click.echo("hepaudit: interrupted", err=True)
        sys.exit(130)
    except Exception as exc:  # the last boundary: what no command turned into a message of its own
        _unexpected(exc, "--debug" in args or bool(os.environ.get("HEPAUDIT_DEBUG")))


def _unexpected(exc: Exception, debug: bool) -> None:
    """One line for an exception nothing else explained (a plugin command's, or a hepaudit bug)."""
    if debug:
        import traceback

        traceback.print_exception(exc)
    first = (str(exc).splitlines() or [""])[0][:200]
    click.echo(f"hepaudit: error: unexpected {type(exc).__name__}: {first} (rerun with --debug or HEPAUDIT_DEBUG=1 "
               "for the traceback; if it is not a plugin's, please report it)", err=True)
    sys.exit(1)


if __name__ == "__main__":  # pragma: no cover
    main()
