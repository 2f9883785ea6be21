"""The dropout family: functional methods built on the masking core, one family per module."""
