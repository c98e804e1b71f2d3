"""References and fixtures shared by the tests and the benchmarks (``scripts/bench_*.py``).

PyTorch originals built with random weights (diffusers SD networks in ``reference``, AdcSR's
student and OSEDiff in ``torch_adcsr``, LPIPS/DISTS in ``torch_metrics``), a cheap degradation
preset (``degradation``) and RealSR/pyiqa-log helpers (``realsr``). These import torch and
diffusers (the ``torch`` extra); nothing else in the package imports this folder.
"""
