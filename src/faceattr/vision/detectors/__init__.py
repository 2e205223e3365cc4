"""The face detectors, one per module; each registers with :data:`faceattr.vision.detect.DETECTORS`."""
