"""Run under torchrun: a tiny retrain whose per-rank final parameters are saved for the test to compare."""

import os
import sys

import torch

import pvnas.retrain.train as train
from pvnas.config import NETWORK_PRESETS, override
from pvnas.space.genotype import Genotype

out, dump = sys.argv[1], sys.argv[2]
built = []
build = train.network_from_config
train.network_from_config = lambda *a, **k: built.append(build(*a, **k)) or built[-1]  # keep this rank's model
cfg = override(NETWORK_PRESETS["tiny"], channels=4, batch_size=4, epochs=1, val_videos=8, seed=2)
train.run_train(Genotype.random(1, min_conv=4), cfg, "synthetic:16", out)
params = {name: p.detach().clone() for name, p in built[0].named_parameters()}
torch.save(params, os.path.join(dump, f"rank{os.environ['RANK']}.pt"))
