"""Runtime: photo -> attributes with a shipped or user model, torch-free.

Owns the `Predictor` facade, the model backends (onnxruntime here; the torch backend registers from
`faceattr.models`), results, the metadata that travels with the weights, test-time augmentation and the
default-path policy (which model file, which precision, on which CPU). Depends on vision, tasks and the foundation.
"""
