"""Detector backends (YOLO), their detection cache and the catalog-type → detector-class map."""

import engine  # noqa: F401  (sets the environment before Ultralytics loads)
