"""Prefect flows: thin wrappers, one task per library stage."""
