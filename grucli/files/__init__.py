"""Model files, input files and datasets: the only code that opens them (h5py, zipfile, JSON,
TensorFlow's checkpoint table, PyTorch's zips, .safetensors, ONNX graphs, Zarr stores), each read
under a budget, into model/ records; and the writers of the files grucli makes from them (a ported
model, a store of activations).

May import: h5py, numpy, safetensors, onnx (files/onnx_file.py, on first use), zarr (on first use), model/, errors.
"""
