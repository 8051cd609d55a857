"""Generate the stored SLCP reference posteriors (energyflow/inference/references/slcp.npz).

For each of the ten observations, two independent groups of MCMC chains
(``energyflow.inference.tasks.slcp_reference_mcmc``, different seeds) each draw 10,000 samples;
they must agree (SBI C2ST between the groups <= 0.55, and every marginal's mean within 0.05
prior widths) before the first group is stored (float32, compressed). Prints the check per
observation and writes references/slcp_check.json beside the file.

    python benchmarks/make_references.py
"""

from __future__ import annotations

import json
import time

import numpy as np
import torch

from energyflow.inference import get_task
from energyflow.inference.tasks import REFERENCES, slcp_reference_mcmc
from energyflow.metrics import c2st

DRAWS = 10000
AGREEMENT = 0.55


def main() -> None:
    task = get_task("slcp")
    stored, checks = [], []
    for index, x in enumerate(task.observations):
        start = time.perf_counter()
        first = slcp_reference_mcmc(x, DRAWS, torch.Generator().manual_seed(1000 + index))
        second = slcp_reference_mcmc(x, DRAWS, torch.Generator().manual_seed(2000 + index))
        agreement = c2st(first[:3000], second[:3000])
        mean_gap = float(((first.mean(0) - second.mean(0)).abs() / 6.0).max())
        check = {
            "observation": index,
            "c2st_between_chain_groups": agreement,
            "largest_mean_gap_in_prior_widths": mean_gap,
            "seconds": time.perf_counter() - start,
        }
        print(json.dumps(check), flush=True)
        if agreement > AGREEMENT or mean_gap > 0.05:
            raise SystemExit(f"observation {index}: the chain groups disagree ({check})")
        checks.append(check)
        stored.append(first.numpy().astype(np.float32))
    REFERENCES.mkdir(exist_ok=True)
    np.savez_compressed(REFERENCES / "slcp.npz", samples=np.stack(stored))
    (REFERENCES / "slcp_check.json").write_text(json.dumps(checks, indent=1))
    print(f"wrote {REFERENCES / 'slcp.npz'}")


if __name__ == "__main__":
    main()
