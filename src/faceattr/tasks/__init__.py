"""Tasks: what an attribute is (ordinal, nominal), how its outputs are formed, decoded, calibrated and scored.

Owns the task description (`Task`), the ordinal formulations (CORAL, OR-CNN, CORN, softmax, regression) with their
layers and losses together, decoding of raw outputs into answers, probability calibration and conformal intervals,
and the metrics. Torch is imported only by the layers and losses, never by decoding: the runtime uses this layer
without torch. Depends on the foundation modules only.
"""
