#!/usr/bin/env bash
# The GPU check (docs/performance.md, "On a GPU"): one prepared run, <= 6 minutes on one H100/H200, one JSON report
# (its time plan: benchmarks/gpu_check.py's header). The report is written after every section and when stopped.
#
# Needs nothing from the network. The GPU machine has torch with CUDA but not PyAV (pvnas imports it); carry a
# cp312 manylinux wheel of PyAV and the pure-Python packages pvnas needs that are missing there, in .whl/:
#
#   echo /.whl/ >> .git/info/exclude
#   python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
#       --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 -d .whl av==14.4.0 typer pyyaml tqdm
#
# and run it from the repository root, e.g. through the device tool with carry [".whl"]:
#
#   bash benchmarks/gpu_check.sh        # one line of JSON per section (the last: the report); $OUT/gpu_check.json
set -euo pipefail
cd "$(dirname "$0")/.."
if compgen -G ".whl/*.whl" > /dev/null; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/pvnas-site .whl/*.whl
  export PYTHONPATH="/tmp/pvnas-site${PYTHONPATH:+:$PYTHONPATH}"
fi
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader >&2 || true
exec timeout -k 10 360 python3 benchmarks/gpu_check.py "$@"
