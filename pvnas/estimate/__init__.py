"""What a run will cost, measured before it is started (docs/design.md §6), never running what does not fit.

By concern: :mod:`.memory` (peak memory, what is available, the activations autograd keeps, counted on the
meta device), :mod:`.datasets` (the videos and classes of a ``--data`` spec, without decoding),
:mod:`.step` (costing one training step: memory first, then warm-up and timed steps), :mod:`.loading`
(whether data loading keeps up with the step), :mod:`.project` (from one step to a whole run), and
:mod:`.retrain`, the retrain estimate beside the training step it times. The search estimate is
:mod:`pvnas.estimate.search`, beside the search step.
"""
