"""How long the surviving rank waits for a lost one: a tiny 2-rank search under torchrun on CPU (gloo), rank 1
killed (SIGKILL, as the OOM killer) or hung (SIGSTOP, as a stuck node) a step or more into the run; prints the
seconds from then to rank 0's exit and to torchrun's, as JSON (the README's "Multi-GPU and multi-node").

    python tests/scripts/lost_rank.py kill      # a dead peer: its sockets close
    PVNAS_COLLECTIVE_TIMEOUT=20 python tests/scripts/lost_rank.py stop   # a silent peer: the collective timeout
"""

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent.parent))
from processes import checkpoint_progress, children, environment  # noqa: E402


def gone(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    except OSError:
        return True


def main(how: str) -> dict:
    out = Path(tempfile.mkdtemp()) / "R"
    torchrun = shutil.which("torchrun", path=os.path.dirname(sys.executable))
    cmd = [torchrun, "--standalone", "--nproc_per_node", "2", "-m", "pvnas", "search", "--data", "synthetic:48",
           "--preset", "tiny", "--epochs", "2", "--channels", "4", "--batch-size", "4", "--workers", "1",
           "--checkpoint-every", "0.0001", "--out", str(out)]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "OMP_NUM_THREADS": "1"}, start_new_session=True)
    lines: list[tuple[float, str]] = []  # stderr with the time each line came
    reader = threading.Thread(target=lambda: lines.extend((time.monotonic(), line) for line in proc.stderr))
    reader.start()
    try:
        while proc.poll() is None:
            progress = checkpoint_progress(out)
            if progress is not None and progress["step"] >= 1:
                break
            time.sleep(0.02)
        ranks = {environment(pid).get("RANK"): pid for pid in children(proc.pid)}
        os.kill(ranks["1"], signal.SIGKILL if how == "kill" else signal.SIGSTOP)
        t0 = time.monotonic()
        while not gone(ranks["0"]):
            time.sleep(0.01)
        rank0 = time.monotonic() - t0
        proc.wait(timeout=600)
        done = time.monotonic() - t0
        reader.join()
        said = [(t - t0, line.strip()) for t, line in lines if "lost a process" in line]
        return {"lost": how, "collective_timeout_s": os.environ.get("PVNAS_COLLECTIVE_TIMEOUT", "600 (default)"),
                "rank0_error_line_s": round(said[0][0], 2) if said else None, "rank0_exit_s": round(rank0, 2),
                "torchrun_exit_s": round(done, 2), "torchrun_code": proc.returncode,
                "rank0_said": said[0][1] if said else None}
    finally:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        shutil.rmtree(out.parent, ignore_errors=True)


if __name__ == "__main__":
    print(json.dumps(main(sys.argv[1] if len(sys.argv) > 1 else "kill"), indent=2))
