"""Matching: exact sets of cryptographic hashes and the PDQ Hamming index.

Every fast matcher here has a plain, obviously-correct twin in `reference` that the tests
compare it with on many inputs.
"""
