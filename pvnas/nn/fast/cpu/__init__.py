"""The CPU-tuned kernels (:mod:`~pvnas.nn.fast.policy` picks them on the CPU only): custom autograd functions that
route around oneDNN's slow paths and save memory by recomputing in backward. Each computes what a plain torch op
computes (tests/test_nn_fast.py checks them against it); ``kernels`` holds the leaf ones, ``parameter_free`` the
identity and pool terms of a node's edges.
"""
