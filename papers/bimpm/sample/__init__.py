"""The shipped BiMPM sample set and its seeded generator."""
