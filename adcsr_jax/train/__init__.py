"""Training: the one loop (``loop.py``), the stage contract (``stage.py``) and the stages.

A stage (``stage1.py``: the pruned VAE decoder; ``stage2.py``: adversarial distillation) is a
module with ``build(config, mesh) -> Stage``; the loop owns everything else (mesh, input,
sharding, jit, checkpoints, metric writers, validation schedule, the NaN guard, resume).
"""
