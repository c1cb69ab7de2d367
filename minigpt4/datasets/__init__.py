"""Datasets, their builders (registered by name) and data-loading helpers."""
