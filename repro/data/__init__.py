"""Data plumbing shared by every paper: the seeded split, the datamodule base, example hashing."""
