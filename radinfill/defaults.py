"""Defaults every part agrees on: which infill the service and backfills run, where the shipped
network and the sample data live. Imports nothing of the parts (DESIGN §3), so the CLI, the
daemon, training and the benchmarks read one answer.
"""

from __future__ import annotations

from pathlib import Path

#: The checkout (or installed tree) this package lies in.
_ROOT = Path(__file__).resolve().parents[1]
#: Where the sample data lives relative to a checkout (``../shared/data/radolan``).
_SAMPLE_DIR = Path("shared") / "data" / "radolan"

#: The shipped network (a release directory in the checkout's ``assets/``): an option, not the
#: default, since it did not clear the promotion gate's classical floor (README, "Evaluation").
SHIPPED_MODEL = _ROOT / "assets" / "model"
#: The default infill of the service, the demo, ``radinfill infill`` and causal backfills: the
#: strongest classical causal method on the held-out set, which no trained network has yet
#: beaten by the gate's margin.
DEFAULT_MODEL = "baseline:advection_boundary"
#: The default of archive backfills: the strongest classical method that also uses the frames
#: after an outage (an archive has them; the live service does not).
ARCHIVE_MODEL = "baseline:bidirectional_boundary"


def sample_data_dir() -> Path | None:
    """``../shared/data/radolan`` next to the working directory or to the checkout, if present."""
    for base in (Path.cwd().parent, _ROOT.parent):
        candidate = base / _SAMPLE_DIR
        if candidate.is_dir():
            return candidate
    return None
