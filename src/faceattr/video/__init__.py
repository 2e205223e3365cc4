"""Video: detection, tracking (ByteTrack through supervision), per-track pooled attributes, annotated output.

Depends on the runtime, vision and the foundation.
"""
