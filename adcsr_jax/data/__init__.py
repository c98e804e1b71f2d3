"""Training data: Real-ESRGAN degradations, image sources, TFDS builders, the input pipeline.

* ``degradations``: presets and the ``Degrader`` (host-sampled parameters, jitted device programs
  with size buckets); single steps in ``ops`` (filter2d, noise, USM), ``jpeg`` (DiffJPEG) and
  ``kernels`` (blur kernels, numpy); resizes come from ``adcsr_jax.resize``.
* ``sources``: folder / TFDS sources (decoding: ``adcsr_jax.image_io``); ``tfds_builders`` (imports TensorFlow):
  ``hr_images`` and ``paired_images`` from local folders; ``sample_set``: scikit-image photos.
* ``pipeline``: ``DataIterator`` - deterministic, host-sharded, resumable batches (with the pair
  pool), placed on the mesh.

Nothing here imports TensorFlow or torch at module level except ``tfds_builders``.
"""
