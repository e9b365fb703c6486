"""`smt_hf.export` is `smt_hf.hub.export` (the Hub export lives in the `smt_hf.hub` package); this import path,
`python -m smt_hf.export` and the `smt-export` entry point `smt_hf.export:main` keep working. The module object is
the same one, so `smt_hf.export.X is smt_hf.hub.export.X` for every name, and setting an attribute on either sets
it on both."""

import sys

from .hub import export as _export

if __name__ == "__main__":  # pragma: no cover - `python -m smt_hf.export ...`
    raise SystemExit(_export.main())
sys.modules[__name__] = _export
