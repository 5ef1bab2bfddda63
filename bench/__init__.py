"""Benchmarks that print numbers side by side with the reference; never asserted."""
