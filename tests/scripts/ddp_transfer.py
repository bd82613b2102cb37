"""Run under torchrun: `pvnas train --init SOURCE --freeze 0.5 ...` as the command line runs it; each rank saves
its weights after every epoch."""

import os
import sys

import torch

import pvnas.retrain.train as train
from pvnas.cli import main

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
code = main(["train", "--init", source, "--freeze", "0.5", "--data", "synthetic:16", "--preset", "tiny",
             "--channels", "4", "--batch-size", "4", "--epochs", "2", "--out", out])
torch.save(states, os.path.join(dump, f"rank{os.environ['RANK']}.pt"))
sys.exit(code)
