"""Model files and input files: the only code that opens them (h5py, zipfile, JSON, TensorFlow's
checkpoint table, PyTorch's zips, .safetensors, ONNX graphs), each read under a budget, into model/
records.

May import: h5py, numpy, safetensors, onnx (files/onnx_file.py, on first use), model/, errors.
"""
