"""Vision: images in, faces out. Image loading (size limits, EXIF, colour), face detectors, landmark alignment.

Torch-free. Depends on the foundation modules only.
"""
