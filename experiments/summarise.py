"""Turn a finished study sweep into the small result files committed beside its README.

    python -m experiments.summarise vanishing_gradients [SWEEP_DIR ...]   # from the repo root

SWEEP_DIR defaults to multirun/<study>; several are read together. The study's summary
(experiments/<study>/summarise.py, found through experiments.registry) writes the figures
its README shows into experiments/<study>/ (or --out DIR), and its markdown becomes
results.md there.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

if __package__ != "experiments":  # run as a file, experiments/ is no package: say how instead
    sys.exit("run it from the repository root as a module: "
             "python -m experiments.summarise STUDY [SWEEP_DIR ...]")

from actlab.analysis import Paths  # noqa: E402
from actlab.errors import UserError  # noqa: E402
from experiments.registry import SUMMARIES, summary_for  # noqa: E402

HERE = Path(__file__).resolve().parent
PROG = "python -m experiments.summarise"


def write(study: str, sweep: Paths, out_dir: Path | None = None) -> Path:
    """Run a study's summary on its sweep: results.md and figures in out_dir (default: its own)."""
    summarise = summary_for(study)
    out = HERE / study if out_dir is None else Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    path = out / "results.md"
    path.write_text(summarise(sweep, out) + "\n")
    return path


def parser() -> argparse.ArgumentParser:
    """The command line: STUDY [SWEEP_DIR ...] [--out DIR]."""
    p = argparse.ArgumentParser(
        prog=PROG, description="Summarise a finished study sweep into results.md and the "
        "figures beside the study's README.")
    p.add_argument("study", help=f"the study (a folder of experiments/): {', '.join(SUMMARIES)}")
    p.add_argument("sweeps", nargs="*", type=Path, metavar="SWEEP_DIR",
                   help="its sweep directory or directories (default: multirun/STUDY)")
    p.add_argument("--out", type=Path, metavar="DIR",
                   help="where results.md and the figures go (default: experiments/STUDY)")
    return p


def main(argv: list[str] | None = None) -> None:
    """python -m experiments.summarise: one line on stderr and exit status 2 on a user error."""
    args = parser().parse_args(argv)
    sweeps = args.sweeps or [Path("multirun") / args.study]
    try:
        path = write(args.study, sweeps[0] if len(sweeps) == 1 else sweeps, args.out)
    except (UserError, FileNotFoundError) as e:
        print(f"{PROG}: error: {e}", file=sys.stderr)
        raise SystemExit(2) from None
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
