"""Small mechanisms every layer uses (retry with backoff, polling loops). Imports nothing of Warden's."""
