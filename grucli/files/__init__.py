"""Model files and input files: the only code that opens them (h5py, zipfile, JSON, TensorFlow's
checkpoint table), each read under a budget, into model/ records.

May import: h5py, numpy, model/, errors.
"""
