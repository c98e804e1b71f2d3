"""Config of the engine tests' toy stage (``tests/train/toy_stage.py``): variant ``8dev``
(data 4 x fsdp 2), ``1dev`` (one device) or ``4dev`` (data 2 x fsdp 2)."""

from __future__ import annotations

import ml_collections


def get_config(arg: str = "8dev") -> ml_collections.ConfigDict:
    c = ml_collections.ConfigDict()
    c.stage = "tests.train.toy_stage"
    c.seed = 3
    c.total_steps = 6
    c.mesh = {"data": 4, "fsdp": 2, "tensor": 1, "num_devices": -1}
    if arg == "1dev":
        c.mesh = {"data": 1, "fsdp": 1, "tensor": 1, "num_devices": 1}
    elif arg == "4dev":
        c.mesh = {"data": 2, "fsdp": 2, "tensor": 1, "num_devices": -1}
    elif arg != "8dev":
        raise ValueError(f"unknown variant {arg!r}")
    c.sharding = {"fsdp_min_size": 16}
    c.data = {
        "source": "sample",
        "batch_size": 8,
        "crop": 16,
        "degradation": None,
        "prefetch": 1,
        "num_workers": 2,
    }
    c.checkpoint = {"every_steps": 2, "keep_last": 1, "keep_every": 4, "asynchronous": True}
    c.log = {"every_steps": 1, "tensorboard": False}
    c.eval = {"every_steps": 3, "at_end": True}
    c.max_nonfinite_in_a_row = 3
    c.toy = {"width": 8, "noise": 0.1, "lr": 1e-2, "inject_inf_steps": ()}
    return c
