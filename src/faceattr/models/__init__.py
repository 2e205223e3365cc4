"""Models: the multi-task network (backbones, shared trunk, task branches), its registry and `create_model()`,
checkpoints (safetensors + metadata) and the torch backend the runtime can run them on.

Depends on tasks (heads), the runtime's metadata and the foundation; torch is needed here.
"""

from faceattr.models.mtl import MultiTaskNet, count_parameters, create_model, list_models, register_model

__all__ = ["MultiTaskNet", "count_parameters", "create_model", "list_models", "register_model"]
