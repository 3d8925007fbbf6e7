"""Mutation testing of the core pure code with mutmut, as one command (`bash scripts/mutation [MODULE...]`).

mutmut copies the sources into `mutants/`, rewrites each function into a trampoline that calls the original
or one mutant (chosen per process by MUTANT_UNDER_TEST), records which tests call which function, and then,
per mutant, forks a warmed-up pytest that runs only those tests. It never writes the sources it mutates, and
it runs here on a copy anyway:

    .work/mutation/venv/   a virtualenv whose site-packages are links to .venv's, minus the editable
                           install's import hook, so nothing can import hybrid_rerank from the working tree
    .work/mutation/tree/   the tracked (and new, not ignored) files: the three folders as
                           src/hybrid_rerank/{connector,workers,mappings}, so mutmut's module names are the
                           import names, plus tests/ and pyproject.toml with the [tool.mutmut] settings
    .work/mutation/tree/mutants/   mutmut's copy, its per-file results (*.meta) and its log

Two checks that the tests really run against the mutants: mutmut first runs them with every trampoline
raising and stops when they still pass, and this script refuses a module whose tests ran but killed nothing
(and a virtualenv that can reach the working tree).

It prints progress (mutants done, rate, ETA), then killed/survived per module and each survivor's diff with,
when judged equivalent, the reason (EQUIVALENT in targets.py), and writes docs/results/mutation.json
(merged: a run of some modules replaces only their entries).

Modules: targets (what is mutated, which tests, the judged survivors), run (environment, mutmut, command
line), report (results, table, JSON), preload (a pytest plugin for mutmut's fork server).
"""
