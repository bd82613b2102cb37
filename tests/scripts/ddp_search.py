"""Run under torchrun: a tiny search whose per-rank final alphas are saved for the test to compare."""

import os
import sys

import torch

from pvnas.config import SEARCH_PRESETS, override
from pvnas.search.loop import run_search

out, dump = sys.argv[1], sys.argv[2]
cfg = override(SEARCH_PRESETS["tiny"], channels=4, batch_size=4, epochs=1, seed=2)
result = run_search(cfg, "synthetic:16", out, impl="reference")
torch.save(result.alphas, os.path.join(dump, f"rank{os.environ['RANK']}.pt"))
