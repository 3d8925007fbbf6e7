"""The isolated environment (virtualenv and copy), the mutmut run with its progress, and the command line."""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from mutationlib.report import (
    KILLED,
    NO_TESTS,
    NOT_CHECKED,
    SURVIVED,
    TIMEOUT,
    module_report,
    print_survivors,
    print_table,
    read_results,
    status_of,
    write_results,
)
from mutationlib.targets import BY_NAME, TARGETS, Target

REPO = Path(__file__).resolve().parents[2]
WORK = Path(os.environ.get("MUTATION_WORK_DIR", REPO / ".work" / "mutation"))
PACKAGES = ("connector", "workers", "mappings")
RESULTS = REPO / "docs" / "results" / "mutation.json"


def log(message: str) -> None:
    print(f"[mutation] {message}", flush=True)


def duration(seconds: float) -> str:
    seconds = round(seconds)
    return f"{seconds // 60}m{seconds % 60:02d}s" if seconds >= 60 else f"{seconds}s"


# --- the isolated environment ----------------------------------------------------------------------------


def site_packages(prefix: Path) -> Path:
    return prefix / "lib" / f"python{sys.version_info.major}.{sys.version_info.minor}" / "site-packages"


def prepare_venv(venv: Path) -> Path:
    """A virtualenv that sees every distribution of .venv except the editable install of this project."""
    python = venv / "bin" / "python"
    if not python.exists():
        subprocess.run([sys.executable, "-m", "venv", "--without-pip", "--clear", str(venv)], check=True)
    source, target = site_packages(REPO / ".venv"), site_packages(venv)
    for entry in target.iterdir():
        if entry.is_symlink():
            entry.unlink()
    for entry in source.iterdir():
        if entry.name.startswith("__editable__") or entry.name.startswith("hybrid_rerank-"):
            continue
        link = target / entry.name
        if not link.exists():
            link.symlink_to(entry)
    # Nothing but mutmut's own sys.path entry may lead to the package: the working tree must be unreachable.
    found = subprocess.run(
        [str(python), "-c", "import importlib.util as u; print(u.find_spec('hybrid_rerank'))"],
        cwd=venv,
        capture_output=True,
        text=True,
        check=True,
        env=clean_env(),
    ).stdout.strip()
    if found != "None":
        raise SystemExit(f"mutation: {venv} can still import hybrid_rerank ({found}); refusing to run")
    return python


def repo_files() -> list[str]:
    listed = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard", "-z"],
        cwd=REPO,
        capture_output=True,
        check=True,
    ).stdout.decode()
    return [name for name in listed.split("\0") if name and (REPO / name).is_file()]


def toml_list(values: list[str]) -> str:
    return "[" + ", ".join(json.dumps(v) for v in values) + "]"


def prepare_tree(tree: Path, targets: list[Target]) -> None:
    """A fresh copy of the package folders (under src/hybrid_rerank/), tests/ and pyproject.toml."""
    if tree.exists():
        shutil.rmtree(tree)
    for name in repo_files():
        top = name.split("/", 1)[0]
        if top in PACKAGES:
            destination = tree / "src" / "hybrid_rerank" / name
        elif top == "tests" or name == "pyproject.toml":
            destination = tree / name
        else:
            continue
        destination.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(REPO / name, destination)
    shutil.copy2(Path(__file__).with_name("preload.py"), tree / "mutation_preload.py")
    wanted = sorted({test for t in targets for test in t.tests})
    tests = [test for test in wanted if (tree / test).is_file()]
    for test in sorted(set(wanted) - set(tests)):
        log(f"note: {test} does not exist; the mutants it would cover count as not killed")
    config = f"""
[tool.mutmut]
source_paths = ["src"]
only_mutate = {toml_list(sorted({t.tree_path for t in targets}))}
also_copy = ["mutation_preload.py"]
pytest_add_cli_args = ["-p", "mutation_preload", "-p", "no:cacheprovider"]
pytest_add_cli_args_test_selection = {toml_list(tests)}
process_isolation = "forkserver"
use_git_change_detection = false
"""
    with (tree / "pyproject.toml").open("a", encoding="utf-8") as handle:
        handle.write(config)


def clean_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "MUTANT_UNDER_TEST")}
    env.update(
        HF_HUB_OFFLINE="1",
        TRANSFORMERS_OFFLINE="1",
        TOKENIZERS_PARALLELISM="false",
        OMP_NUM_THREADS="1",
        MKL_NUM_THREADS="1",
    )
    return env


# --- running and watching --------------------------------------------------------------------------------


PHASES = (
    "Generating mutants",
    "Running stats",
    "Running clean tests",
    "Running forced fail test",
    "Running mutation testing",
)


def run_mutmut(python: Path, tree: Path, targets: list[Target], jobs: int, limit_s: float) -> float:
    patterns = [p for t in targets for p in t.patterns]
    command = [
        "nice",
        "-n",
        os.environ.get("MUTATION_NICE", "10"),
        str(python),
        "-c",
        "import sys; from mutmut.__main__ import cli; sys.argv[0] = 'mutmut'; cli()",
        "run",
        "--max-children",
        str(jobs),
        *patterns,
    ]
    tmp = WORK / "tmp"
    tmp.mkdir(parents=True, exist_ok=True)
    env = clean_env() | {"PYTEST_DEBUG_TEMPROOT": str(tmp)}
    log_path = WORK / "mutmut.log"
    started = time.monotonic()
    seen_phases: set[str] = set()
    first_result: tuple[float, int] | None = None
    last_line = ""
    last_print = 0.0
    results: dict[str, dict[str, int | None]] = {}
    with log_path.open("w", encoding="utf-8") as output:
        process = subprocess.Popen(
            command, cwd=tree, env=env, stdout=output, stderr=subprocess.STDOUT, start_new_session=True
        )
        try:
            while process.poll() is None:
                time.sleep(2)
                now = time.monotonic()
                if now - started > limit_s:
                    os.killpg(process.pid, signal.SIGTERM)
                    try:
                        process.wait(30)
                    except subprocess.TimeoutExpired:
                        os.killpg(process.pid, signal.SIGKILL)
                        process.wait()
                    raise SystemExit(
                        f"mutation: stopped after {duration(limit_s)} (--timeout); see {log_path}"
                    )
                text = log_path.read_text(encoding="utf-8", errors="replace")
                for phase in PHASES:
                    if phase in text and phase not in seen_phases:
                        seen_phases.add(phase)
                        log(f"{phase[0].lower()}{phase[1:]} ({duration(now - started)})")
                results = read_results(tree, targets, results)
                if "Running mutation testing" not in seen_phases:
                    continue
                # Rate and ETA count the mutants that run tests; those no test reaches are marked at once.
                counts = Counter(status_of(code) for r in results.values() for code in r.values())
                to_run = sum(counts.values()) - counts[NO_TESTS]
                ran = to_run - counts[NOT_CHECKED]
                if to_run == 0:
                    continue
                if first_result is None:
                    first_result = (now, ran)
                    continue
                rate = (ran - first_result[1]) / max(now - first_result[0], 1e-9)
                eta = duration((to_run - ran) / rate) if rate > 0 else "?"
                line = (
                    f"{ran}/{to_run} mutants ({100 * ran / to_run:.0f}%) · {rate:.2f}/s · ETA {eta} · "
                    f"killed {counts[KILLED] + counts[TIMEOUT]}, survived {counts[SURVIVED]}"
                    + (f" ({counts[NO_TESTS]} reached by no test)" if counts[NO_TESTS] else "")
                )
                if line != last_line and now - last_print >= 10:
                    log(line)
                    last_line, last_print = line, now
        except BaseException:
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGTERM)
                process.wait()
            raise
    elapsed = time.monotonic() - started
    if process.returncode != 0:
        tail = log_path.read_text(encoding="utf-8", errors="replace")[-4000:]
        raise SystemExit(f"mutation: mutmut exited with {process.returncode}; the end of {log_path}:\n{tail}")
    return elapsed


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="scripts/mutation",
        description="Mutation testing of the core pure code with mutmut; prints killed/survived per module.",
    )
    parser.add_argument("modules", nargs="*", metavar="MODULE", help=f"default: all of {', '.join(BY_NAME)}")
    parser.add_argument("--jobs", type=int, default=int(os.environ.get("MUTATION_JOBS", "2")))
    parser.add_argument("--timeout", type=float, default=3600.0, help="seconds before the run is stopped")
    parser.add_argument("--json", type=Path, default=RESULTS, help="results file (merged per module)")
    parser.add_argument("--fail-under", type=float, default=85.0, help="exit 1 when a module kills less (%%)")
    parser.add_argument("--list", action="store_true", help="list the modules, their scope and tests")
    parser.add_argument(
        "--report-only", action="store_true", help="report the last run again (e.g. after judging survivors)"
    )
    args = parser.parse_args(argv)

    unknown = [m for m in args.modules if m not in BY_NAME]
    if unknown:
        parser.error(f"unknown module(s) {', '.join(unknown)}: use {', '.join(BY_NAME)}")
    targets = [BY_NAME[m] for m in args.modules] if args.modules else TARGETS
    if args.list:
        for t in targets:
            scope = ", ".join(t.functions) if t.functions else "every function"
            print(f"{t.name}: {t.path} [{scope}] <- {', '.join(t.tests)}")
        return 0

    tree = WORK / "tree"
    last: dict[str, Any] = {}
    if args.report_only:
        last = (
            json.loads(args.json.read_text(encoding="utf-8")).get("last_run", {})
            if args.json.exists()
            else {}
        )
        if not (tree / "mutants").is_dir() or not set(last.get("modules", [])) >= {t.name for t in targets}:
            parser.error("--report-only needs a finished run of these modules in " + str(tree))
        seconds = float(last["seconds"])
    else:
        log(f"modules: {', '.join(t.name for t in targets)}; work folder {WORK}")
        python = prepare_venv(WORK / "venv")
        prepare_tree(tree, targets)
        seconds = run_mutmut(python, tree, targets, max(args.jobs, 1), args.timeout)

    results = read_results(tree, targets)
    modules = {t.name: module_report(tree, t, results[t.name]) for t in targets}
    print_survivors(modules)
    print()
    print_table(modules)
    run = last or {
        "modules": [t.name for t in targets],
        "seconds": round(seconds),
        "jobs": args.jobs,
        "finished": datetime.now(UTC).isoformat(timespec="seconds"),
    }
    write_results(args.json, modules, run)
    log(f"{duration(seconds)} with {run['jobs']} jobs; results in {args.json}")

    # A module where tests ran but killed nothing was not imported from the mutants: the run proves nothing.
    broken = [n for n, m in modules.items() if m["killed"] == 0 and m["total"] > m["no_tests"]]
    if broken:
        log(f"no mutant killed in {', '.join(broken)}: the tests did not run against the mutants")
        return 2
    low = [n for n, m in modules.items() if (m["killed_percent"] or 0.0) < args.fail_under]
    if low:
        log(f"under {args.fail_under:g}% killed: {', '.join(low)}")
        return 1
    return 0
