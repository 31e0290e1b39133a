"""One 3 pumps x 8 drain of 3,000 0 ms jobs on a fresh cluster, with the kit of the directory it
is run in: run it in this checkout and in one of the code before, alternating, for a before/after
that changes only the kit (the pump is the installed one):

    (cd /tmp/before && /path/to/.venv/bin/python /path/to/bench/kit_ab.py before)
    .venv/bin/python bench/kit_ab.py after

Prints one JSON line: bench.supabase_kit.run_variant's result with the label.
"""

from __future__ import annotations

import json
import sys

sys.path.insert(0, ".")  # the kit (bench/, tests/supabase/, supabase/) of the current directory

from bench.supabase_kit import _deps, _template, run_variant
from tests.supabase import kit


def main() -> None:
    label = sys.argv[1] if len(sys.argv) > 1 else "this"
    pg_bin, deno = _deps()
    with kit.cluster(pg_bin) as pg:
        _template(pg)
        result = run_variant(pg, deno, f"3x8-{label}", 3, 8, 3000, 0)
    print(json.dumps({"label": label, **result}))


if __name__ == "__main__":
    main()
