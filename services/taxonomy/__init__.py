"""Taxonomy service: taxonomies and the plans that turn a recipe into seeds."""
