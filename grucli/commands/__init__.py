"""What each command computes, as frozen report records: inspect, explain, verify, diff, check and
the PyTorch layout. No printing here (output/ does that) and no options parsing (cli/).

May import: engine/, frameworks/, files/, model/, errors.
"""
