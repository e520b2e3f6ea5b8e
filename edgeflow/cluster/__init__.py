"""edgeflow on a Ray cluster: connecting (session), a device farm (farm), and Ray tasks as an executor.

Nothing here imports Ray at import time: ``import edgeflow`` never needs it.
"""
