"""`python -m mutationlib` with scripts/ on the path: what `bash scripts/mutation` runs."""

from __future__ import annotations

import sys

from mutationlib.run import main

sys.exit(main(sys.argv[1:]))
