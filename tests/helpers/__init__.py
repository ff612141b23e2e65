"""Helpers that several test modules share (fixture writers, injected-failure scripts)."""
