"""Selector service: picks the records to keep and writes the datasets."""
