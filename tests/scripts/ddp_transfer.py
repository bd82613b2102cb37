"""Run under torchrun: a retrain from a model file with --freeze; each rank saves its weights after every epoch."""

import os
import sys

import torch

import pvnas.retrain.train as train
from pvnas.config import NETWORK_PRESETS, override
from pvnas.retrain.modelfile import init_genotype

source, out, dump = sys.argv[1], sys.argv[2], sys.argv[3]
built, states = [], []
build = train.network_from_config
train.network_from_config = lambda *a, **k: built.append(build(*a, **k)) or built[-1]  # keep this rank's model
end_epoch = train.TrainEpochs.end_epoch


def keep(self, epoch):
    record = end_epoch(self, epoch)
    states.append({k: v.detach().clone() for k, v in built[0].state_dict().items()})
    return record


train.TrainEpochs.end_epoch = keep
cfg = override(NETWORK_PRESETS["tiny"], channels=4, batch_size=4, epochs=2, val_videos=4)
train.run_train(init_genotype(source), cfg, "synthetic:16", out, preset="tiny", init=source, freeze=0.5)
torch.save(states, os.path.join(dump, f"rank{os.environ['RANK']}.pt"))
