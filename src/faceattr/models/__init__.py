from faceattr.models.mtl import MultiTaskNet, count_parameters, create_model, list_models, register_model

__all__ = ["MultiTaskNet", "count_parameters", "create_model", "list_models", "register_model"]
