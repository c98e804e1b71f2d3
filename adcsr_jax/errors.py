"""``UserError``: the base of every error that a user's mistake causes (a file, a flag, a value).

The errors that name a bad input derive from it as well as from their usual built-in base
(``CheckpointReadError`` is also an ``OSError``, ``PairingError`` a ``ValueError``, ...), so Python
callers can keep catching those, while ``adcsr`` catches ``UserError`` alone and prints its
message instead of a traceback (exit status 2, see ``adcsr_jax.cli``). This module imports
nothing, so the command line can use it before jax is loaded.
"""

from __future__ import annotations


class UserError(Exception):
    """A mistake in the user's input; the message names the file, flag or value and what to do."""
