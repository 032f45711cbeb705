"""What each command computes, as frozen report records: inspect, explain, verify, diff, check,
the PyTorch layout, convert and port, and over whole datasets activations, probe and the
population views. No printing here (output/ does that) and no options parsing (cli/).

May import: engine/, frameworks/, files/, model/, errors; onnxruntime (convert's proof),
scikit-learn (probes, PCA), dask and distributed (activations on a cluster), each on first use.
"""
