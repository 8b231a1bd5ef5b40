"""One module per resource; each holds its own ``router``."""
