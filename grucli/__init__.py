"""grucli: read, slice and check the weights of Keras recurrent layers (GRU, LSTM, SimpleRNN)."""

__version__ = "0.1.0"
