"""One module per model family: load a checkpoint (hub id or folder), preprocess, forward.

Each family exposes a frozen preprocessing transform (hashable, so families with equal recipes
share a tensor) and a job the engine runs on batches.
"""
