"""Judge service: scores candidate responses and builds preference pairs."""
