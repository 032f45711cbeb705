"""The NumPy replay: Keras's layers computed step by step (`steps`, `activations`), the model's
forward pass (`graph`) and the layer registry (`registry`) of everything it runs.

May import: numpy, threadpoolctl (parallel only), model/, errors. Never a file format or a framework.
"""
