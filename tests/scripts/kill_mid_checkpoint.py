"""`pvnas` whose second `checkpoint.pt` write is killed (SIGKILL) halfway through the file, as an OOM kill or a
node failure would: the test checks the previous checkpoint stays usable. Arguments: those of `pvnas`."""

from pvnas.cli import main  # first: it sets the OpenMP wait policy before torch loads, as `pvnas` does

import io  # noqa: E402
import os  # noqa: E402
import signal  # noqa: E402
import sys  # noqa: E402

import torch  # noqa: E402

import pvnas.runtime.run as run  # noqa: E402
from pvnas.runtime.rundir import atomic_write_bytes  # noqa: E402

save_torch, checkpoints = run.save_torch, []


def killed_midway(obj, path):
    if path.name == "checkpoint.pt":
        checkpoints.append(path)
    if len(checkpoints) < 2:
        return save_torch(obj, path)
    data = io.BytesIO()
    torch.save(obj, data)

    def write_half(f):  # through the real atomic write: its temp file is what is left behind
        f.write(data.getvalue()[: len(data.getvalue()) // 2])
        f.flush()
        os.kill(os.getpid(), signal.SIGKILL)

    atomic_write_bytes(path, write_half)


run.save_torch = killed_midway
sys.exit(main(sys.argv[1:]))
