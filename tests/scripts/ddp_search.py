"""Run under torchrun: a tiny search with the `converge` schedule; each rank saves its final alphas and
every convergence decision it took, for the test to compare."""

import os
import sys

import torch

import pvnas.search.alpha_schedule as schedule
from pvnas.config import SEARCH_PRESETS, override
from pvnas.search.loop import run_search

out, dump = sys.argv[1], sys.argv[2]
# alphas barely move (lr 1e-6) and any relative change passes: the monitor decays at its first three looks
cfg = override(SEARCH_PRESETS["tiny"], channels=4, batch_size=4, epochs=2, seed=2, impl="reference",
               schedule="converge", converge_window=0.25, converge_tol=100.0, a_lr=1e-6)
decisions = []
observe = schedule.ConvergenceMonitor.observe


def recording(self, step, alphas):
    decided = observe(self, step, alphas)
    decisions.append((step, decided))
    return decided


schedule.ConvergenceMonitor.observe = recording
result = run_search(cfg, "synthetic:16", out)
torch.save({"alphas": result.alphas, "decisions": decisions}, os.path.join(dump, f"rank{os.environ['RANK']}.pt"))
