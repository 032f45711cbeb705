"""Keras models to ONNX, built from grucli's model records without TensorFlow: recurrent layers as
native ONNX GRU, LSTM and RNN nodes (never a Loop or Scan), the other layers as the ONNX
operators that compute them exactly; anything else refused by name.

May import: onnx, numpy, files/ (input declarations), model/, errors.
"""
