"""Reading mutmut's results and reporting them: the table, each survivor's diff and judgement, the JSON."""

from __future__ import annotations

import json
import os
from collections import Counter
from pathlib import Path
from typing import Any

from mutationlib.targets import EQUIVALENT, TARGETS, Target

KILLED, TIMEOUT, SURVIVED, NO_TESTS, NOT_CHECKED, OTHER = (
    "killed",
    "timeout",
    "survived",
    "no tests",
    "not checked",
    "other",
)


def status_of(exit_code: int | None) -> str:
    """mutmut's verdict for an exit code (its own table, mutmut.stats.status_by_exit_code)."""
    if exit_code is None:
        return NOT_CHECKED
    if exit_code in (1, 3):
        return KILLED
    if exit_code in (36, 24, -24, 152, 255):
        return TIMEOUT
    if exit_code == 0:
        return SURVIVED
    if exit_code in (5, 33):
        return NO_TESTS
    return OTHER


def read_results(
    tree: Path, targets: list[Target], previous: dict[str, dict[str, int | None]] | None = None
) -> dict[str, dict[str, int | None]]:
    """Exit code by in-scope mutant, per module, from mutmut's per-file meta files (None: not run yet). A
    file caught mid-write keeps the `previous` reading."""
    results: dict[str, dict[str, int | None]] = {}
    for target in targets:
        meta = tree / "mutants" / (target.tree_path + ".meta")
        try:
            codes = json.loads(meta.read_text(encoding="utf-8"))["exit_code_by_key"]
        except (OSError, ValueError, KeyError):
            results[target.name] = (previous or {}).get(target.name, {})
            continue
        results[target.name] = {k: v for k, v in codes.items() if target.in_scope(k)}
    return results


# --- the report ------------------------------------------------------------------------------------------


def survivor_diffs(tree: Path, target: Target, names: list[str]) -> dict[str, str]:
    """mutmut's diff of each survivor, read from the mutants folder (in-process: no test runs)."""
    from mutmut.mutation.diff_apply import get_diff_for_mutant

    cwd = Path.cwd()
    os.chdir(tree)
    try:
        return {name: get_diff_for_mutant(name, path=target.tree_path) for name in names}
    finally:
        os.chdir(cwd)


def judgement(target: Target, mutant: str, diff: str) -> str | None:
    function = mutant[len(target.module) + 1 :].partition("__mutmut_")[0]
    added = [
        line[1:].strip() for line in diff.splitlines() if line.startswith("+") and not line.startswith("++")
    ]
    for line in added:
        reason = EQUIVALENT.get(target.name, {}).get((function, line))
        if reason:
            return reason
    return None


def module_report(tree: Path, target: Target, codes: dict[str, int | None]) -> dict[str, Any]:
    counts = Counter(status_of(code) for code in codes.values())
    survivors = sorted((m for m, c in codes.items() if status_of(c) != KILLED and status_of(c) != TIMEOUT))
    diffs = survivor_diffs(tree, target, survivors)
    listed = []
    for mutant in survivors:
        listed.append(
            {
                "mutant": mutant,
                "status": status_of(codes[mutant]),
                "equivalent": judgement(target, mutant, diffs[mutant]),
                "diff": diffs[mutant],
            }
        )
    total = len(codes)
    killed = counts[KILLED] + counts[TIMEOUT]
    equivalent = sum(1 for s in listed if s["equivalent"])
    return {
        "file": target.path,
        "scope": list(target.functions) if target.functions else "every function",
        "tests": list(target.tests),
        "total": total,
        "killed": killed,
        "timeout": counts[TIMEOUT],
        "survived": counts[SURVIVED],
        "no_tests": counts[NO_TESTS],
        "other": counts[OTHER] + counts[NOT_CHECKED],
        "killed_percent": round(100 * killed / total, 1) if total else None,
        "judged_equivalent": equivalent,
        "killed_percent_of_non_equivalent": round(100 * killed / (total - equivalent), 1)
        if total > equivalent
        else None,
        "survivors": listed,
    }


def print_table(modules: dict[str, dict[str, Any]]) -> None:
    header = ("module", "killed", "survived", "no tests", "other", "total", "killed %", "equiv.", "% non-eq.")
    rows = [
        (
            name,
            str(m["killed"]),
            str(m["survived"]),
            str(m["no_tests"]),
            str(m["other"]),
            str(m["total"]),
            f"{m['killed_percent']:.1f}" if m["killed_percent"] is not None else "-",
            str(m["judged_equivalent"]),
            f"{m['killed_percent_of_non_equivalent']:.1f}"
            if m["killed_percent_of_non_equivalent"] is not None
            else "-",
        )
        for name, m in modules.items()
    ]
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]
    for row in [header, tuple("-" * w for w in widths), *rows]:
        print(
            "  ".join(
                cell.ljust(w) if i == 0 else cell.rjust(w)
                for i, (cell, w) in enumerate(zip(row, widths, strict=True))
            )
        )


def print_survivors(modules: dict[str, dict[str, Any]]) -> None:
    for name, m in modules.items():
        for survivor in m["survivors"]:
            verdict = (
                f"equivalent: {survivor['equivalent']}" if survivor["equivalent"] else survivor["status"]
            )
            print(f"\n--- {name}: {survivor['mutant']} ({verdict})")
            print("\n".join(survivor["diff"].splitlines()[2:]))


def write_results(path: Path, modules: dict[str, dict[str, Any]], run: dict[str, Any]) -> None:
    try:
        existing = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        existing = {}
    merged = dict(existing.get("modules", {}))
    for name, report in modules.items():
        merged[name] = report | {"measured": run["finished"], "run_seconds": run["seconds"]}
    ordered = {t.name: merged[t.name] for t in TARGETS if t.name in merged}
    document = {
        "about": "Mutation testing of the core pure code (bash scripts/mutation; README, Tests).",
        "tool": existing_tool(),
        "last_run": run,
        "modules": ordered,
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(document, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")


def existing_tool() -> str:
    from importlib.metadata import version

    return f"mutmut {version('mutmut')}"
