"""``python -m adcsr_jax`` is the ``adcsr`` command."""

import sys

from adcsr_jax.cli import main

sys.exit(main())
