"""Training data: Real-ESRGAN degradations, image sources, TFDS builders, the input pipeline.

* ``degradations``: presets and the ``Degrader`` (host-sampled parameters, jitted device programs
  with size buckets); single steps in ``resize``, ``ops`` (filter2d, noise, USM), ``jpeg``
  (DiffJPEG) and ``kernels`` (blur kernels, numpy).
* ``sources``: folder / TFDS sources and robust decoding; ``tfds_builders`` (imports TensorFlow):
  ``hr_images`` and ``paired_images`` from local folders; ``sample_set``: scikit-image photos.
* ``pipeline``: ``DataIterator`` - deterministic, host-sharded, resumable batches (with the pair
  pool), placed on the mesh.

Nothing here imports TensorFlow or torch at module level except ``tfds_builders``.
"""
