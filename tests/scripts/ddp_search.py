"""Run under torchrun: `pvnas ARGS...` as the command line runs it, with `converge` set to decay at its first three
looks (alphas barely move, lr 1e-6, and any relative change passes); each rank saves its final alphas and every
convergence decision it took into $DDP_DUMP/rank<RANK>.pt, for the test to compare."""

import os
import sys
from pathlib import Path

import torch

import pvnas.search.alpha_schedule as schedule
import pvnas.search.loop as loop
from pvnas.cli import main
from pvnas.config import SEARCH_PRESETS, override

SEARCH_PRESETS["tiny"] = override(SEARCH_PRESETS["tiny"], converge_window=0.25, converge_tol=100.0, a_lr=1e-6)
dump = Path(os.environ["DDP_DUMP"]) / f"rank{os.environ['RANK']}.pt"
kept = {"decisions": []}
observe, search = schedule.ConvergenceMonitor.observe, loop.run_search


def recording(self, step, alphas):
    decided = observe(self, step, alphas)
    kept["decisions"].append((step, decided))
    return decided


def keeping(*args, **kwargs):
    result = search(*args, **kwargs)
    kept["alphas"] = result.alphas
    return result


schedule.ConvergenceMonitor.observe, loop.run_search = recording, keeping
try:
    code = main(sys.argv[1:])
finally:
    torch.save(kept, dump)
sys.exit(code)
