"""A pytest plugin that scripts/mutation loads (`-p mutation_preload`) in mutmut's fork server: torch and
transformers are imported once there, so each forked mutant run starts in milliseconds instead of paying
their seconds of import. One intra-op thread: forked children must not inherit a live OpenMP pool, and the
machine is shared."""

from __future__ import annotations

import importlib

for _name in ("torch", "transformers", "transformers.models.bert"):
    importlib.import_module(_name)

importlib.import_module("torch").set_num_threads(1)
