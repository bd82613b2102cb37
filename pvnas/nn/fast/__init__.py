"""A fast supernet cell: the same mixture as :class:`~pvnas.nn.supernet.ReferenceCell`, computed cheaply.

:class:`FastCell` owns exactly the reference's modules (``pre0``, ``pre1``, 14 :class:`MixedOp` edges), so
state dicts and optimizer states are interchangeable with the reference; only ``forward`` differs
(measurements behind each choice: docs/performance.md):

* every tensor lives as frames ``(N*T, C, H, W)`` in channels-last memory, which is also the
  memory of a channels-last-3d ``(N, C, T, H, W)`` clip: 1xkxk convs and pools run as 2D ops and
  the 3x1x1 temporal convs as 2D convs on a ``(N, C, T, H*W)`` view, with no transposes in between;
* the edges leaving a node share their input: its ReLU, the pixel phases that strided/dilated ops
  read, the pools and their affine-free train-mode BatchNorm are computed once per node;
* ``zero`` is skipped; a conv op's softmax weight is the affine weight of its last BatchNorm; the
  identity and pool terms are added by one autograd function that recomputes the pools in backward
  rather than keeping pooled maps and max-pool indices (memory);
* oneDNN's slow kernels are routed around: stride-1 dilated depthwise convs get a hand-written
  backward, strided ones and FactorizedReduce read gathered pixel phases, the forward max pool
  skips argmax indices, and the average pool below 16 channels is two separable box sums;
* "3+1x1" has no nonlinearity between its two convs: it runs as one temporal conv, 1x1 folded in;
* edges with few channels (partial channels) are batched: ``group`` edges of a node run each op as
  one conv over their channels interleaved channel-major (``channel * group + edge``), since
  channels-last kernels waste vector width below 16 channels;
* ``partial_channels=K`` is PC-DARTS: ops mix the first C/K channels, the rest bypass the edge
  (1x2x2 max pool on reduction edges), and the edge output is channel-shuffled with K groups.

Modules, lowest first: ``policy`` (which kernels a tensor takes: the one place that decides); ``layout`` (frames,
channel-major edge batching, pixel phases); the kernels by target: ``cpu`` (the CPU-tuned custom autograd
functions: ``cpu.kernels``, ``cpu.parameter_free``) and ``generic`` (plain torch ops a compiler fuses, for GPUs);
``shared`` (a node's input read by all its edges); ``conv``, ``norm``, ``pool`` (the layers of the op registry as
kernels on frames, G edges at once, dispatching by ``policy``); ``ops`` (the registry's conv ops built from them);
``cell``; ``network``, the retrain network's fast forward (one edge per op, G = 1), which
:class:`~pvnas.nn.network.Network` runs with ``impl="fast"``. Below ``cell`` and ``network`` nothing knows
either network: the kernels take registry modules, one edge (G = 1) or many.
"""

from pvnas.nn.fast.cell import FastCell

__all__ = ["FastCell"]
