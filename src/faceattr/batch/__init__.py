"""Batch jobs: sharded, resumable Parquet output from many photos, run locally in worker processes or on Ray.

Depends on the runtime, vision and the foundation.
"""
