"""Evidence: evaluation on a protocol, the bias audit, Grad-CAM explanations, ablation grids and the paper's
claims judged with a paired bootstrap, and the reports they write.

Depends on training and everything below it.
"""
