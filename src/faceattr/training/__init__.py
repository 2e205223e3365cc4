"""Training: the loop, validation, resume, distributed data parallel, losses and loss weightings, batch
inference for validation, ONNX/INT8 export and alignment-template fitting.

Depends on data, models, config, runtime, tasks, vision and the foundation; nothing below imports it.
"""
