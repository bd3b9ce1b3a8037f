"""Files: the model dir format, the export layout, atomic writes, aligned arrays, Keras internals.

The lowest layer: the models, the converters and the exports all build on it; it knows no family.
"""
