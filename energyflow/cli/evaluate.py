"""``energyflow eval``: judge a trained model on held-out rows. On the run's own data it writes
the run's report again (metrics.json, samples.png and, from the checkpoint, loss_curve.png);
with ``--data`` another data set is judged and the result printed only."""

from __future__ import annotations

import argparse
import json
from dataclasses import replace
from pathlib import Path

import torch

from energyflow.cli.report import evaluate, optional_state, summary_line, write_report
from energyflow.cli.run_folder import CHECKPOINT, RunLock
from energyflow.cli.runs import load_run
from energyflow.cli.settings import dataset_of

__all__ = ["cmd_eval"]


def cmd_eval(args: argparse.Namespace) -> int:
    model, settings = load_run(args.run, args.device)
    data = settings.data if args.data is None else replace(settings.data, data=args.data)
    dataset = dataset_of(data, settings.train.seed)
    if dataset.features != model.features or dataset.context_features != model.context_features:
        raise ValueError(
            f"--data {data.data}: {dataset.features} features and {dataset.context_features} "
            f"context columns, but the model has {model.features} and {model.context_features}"
        )
    torch.manual_seed(args.seed)
    if args.data is not None:
        print(json.dumps(evaluate(model, dataset, full=True), indent=1))
        return 0
    run = Path(args.run)
    with RunLock(run):  # not while a run writes the folder
        state = optional_state(run / CHECKPOINT, torch.device("cpu"))
        result = write_report(model, dataset, run, state)
    print(summary_line(result))
    print(f"report:  {run / 'metrics.json'}, {run / 'samples.png'}")
    return 0
