"""Clustering, quotas and the selection methods: pure, deterministic given a seed."""
