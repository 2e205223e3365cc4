"""Data: dataset readers (UTKFace, FairFace, manifests), the evaluation protocols and splits, label maps for
training several datasets together, the decoded-image cache, batching and augmentation.

Depends on config, tasks, vision and the foundation.
"""
