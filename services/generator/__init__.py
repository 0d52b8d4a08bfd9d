"""Generator service: instructions from seeds, candidate responses from instructions."""
