"""Prefect flows: thin orchestration of clearlake functions."""
