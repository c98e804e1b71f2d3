"""Image-quality metrics (one module each), FID, and the evaluator behind ``adcsr eval``."""

from adcsr_jax.eval.base import Metric, available_metrics, get_metric
from adcsr_jax.weights.errors import MissingWeightError

__all__ = ["Metric", "MissingWeightError", "available_metrics", "get_metric"]
