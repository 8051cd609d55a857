"""The ``energyflow`` command line (also ``python -m energyflow``), one module per command:

    energyflow train --data moons --time-budget 60 --out runs/moons        (cli.train)
    energyflow train --data digits --model affine --objective mle --out runs/digits-mle
    energyflow train --data my.csv --context-cols label --out runs/mine
    energyflow train --out runs/moons --resume --time-budget 120           (extend a run)
    energyflow sample --run runs/moons --n 10000 --out samples.npy         (cli.sample)
    energyflow eval --run runs/moons                                       (cli.evaluate)
    energyflow posterior --task two_moons --time-budget 60 --out runs/post (cli.posterior)
    torchrun --nproc-per-node 4 -m energyflow train --data digits --out runs/ddp

``energyflow train``'s flags are the fields of its settings (``cli.settings``); a bad input ends
in one line naming it (``--debug`` shows the traceback).
"""

from __future__ import annotations

import argparse
import sys
from typing import Optional

from energyflow import distributed
from energyflow.cli.arguments import OneLineParser, add_setting_flags, number
from energyflow.cli.evaluate import cmd_eval
from energyflow.cli.posterior import add_posterior_command
from energyflow.cli.sample import cmd_sample
from energyflow.cli.settings import GROUPS
from energyflow.cli.train import cmd_train
from energyflow.training.config import AT_LEAST_1

__all__ = ["main", "parser"]


def parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--debug", action="store_true", help="show tracebacks of errors")
    top = OneLineParser(
        prog="energyflow", description="Train and sample likelihood-free energy flows."
    )
    commands = top.add_subparsers(dest="command", required=True, parser_class=OneLineParser)
    # no abbreviated options: --resume compares the options written out with the saved run
    train = commands.add_parser("train", help="train a model", parents=[common], allow_abbrev=False)
    for group, kind in GROUPS.items():
        add_setting_flags(train.add_argument_group(group), kind, prefix=f"{group}.")
    train.add_argument("--out", required=True, help="run folder")
    train.add_argument("--resume", action="store_true", help="continue (or extend) the run")
    train.add_argument(
        "--overwrite", action="store_true", help="allow a non-empty folder that is not a run"
    )
    train.set_defaults(func=cmd_train)

    sample = commands.add_parser(
        "sample", help="draw samples from a trained model", parents=[common], allow_abbrev=False
    )
    sample.add_argument("--run", required=True)
    sample.add_argument(
        "--n",
        type=number(int, AT_LEAST_1),
        default=None,
        help="samples (default 10000); with --context: samples per context row, giving "
        "(n, rows, D) (default: one per row, giving (rows, D))",
    )
    sample.add_argument("--context", default=None, help=".npy of context rows (conditional)")
    sample.add_argument("--out", required=True, help=".npy file")
    sample.add_argument("--seed", type=int, default=0)
    sample.add_argument("--device", default="cpu", help="where to sample: cpu, cuda[:i], auto")
    sample.set_defaults(func=cmd_sample)

    evaluation = commands.add_parser(
        "eval",
        help="judge a model; on its own data, write its report again",
        parents=[common],
        allow_abbrev=False,
    )
    evaluation.add_argument("--run", required=True)
    evaluation.add_argument("--data", default=None, help="default: the run's data")
    evaluation.add_argument("--seed", type=int, default=0)
    evaluation.add_argument("--device", default="cpu", help="where to sample: cpu, cuda[:i], auto")
    evaluation.set_defaults(func=cmd_eval)

    add_posterior_command(commands, common)
    return top


def main(argv: Optional[list[str]] = None) -> int:
    """Run one command; returns its exit status (2: bad input, said in one line)."""
    try:
        args = parser().parse_args(list(sys.argv[1:] if argv is None else argv))
    except SystemExit as stop:  # --help, or a flag the parser refused (its line is printed)
        return int(stop.code or 0)
    failed = True
    try:
        code = args.func(args)
        failed = False
        return code
    except (ValueError, OSError, FloatingPointError) as err:
        if args.debug:
            raise
        print(f"energyflow: error: {err}", file=sys.stderr)
        return 1 if isinstance(err, FloatingPointError) else 2
    finally:
        distributed.finish(synchronise=not failed)


if __name__ == "__main__":
    sys.exit(main())
