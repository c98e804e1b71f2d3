"""adcsr-jax."""
