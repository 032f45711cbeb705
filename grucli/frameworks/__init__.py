"""The Keras frameworks (Keras 3, tf-keras): the only code that imports Keras, TensorFlow, JAX or
PyTorch. Builds a Keras model from the config grucli validated, sets the weights grucli read, and
runs predict and probes for verify and explain.

May import: keras, tensorflow, tf_keras (and torch or jax for the device), files/, model/, errors.
"""
