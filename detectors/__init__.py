"""Detector backends (YOLO), their detection cache and the catalog-type → detector-class map."""
