"""A service for the hardening tests (faults, bad input, secrets, soak)."""
