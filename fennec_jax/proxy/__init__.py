"""Proxy feature extraction: a large vision model run over a task's images."""
