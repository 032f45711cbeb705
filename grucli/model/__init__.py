"""The model records: what a file holds, as grucli understands it, independent of any format.

`records` (RawLayer trees, RecurrentLayer with canonical weights and typed Settings), `registry`
(every fact about a recurrent family and the layer classes read by name), `semantics` (Keras 2
or Keras 3 definitions), `layers` (finding and canonicalising recurrent layers), `gates`
(slicing and layout conversions), `equations`, `paths`, `spec` (a model's call graph), `stats`.

May import: numpy, errors. Nothing else of grucli: everything else builds on this.
"""
