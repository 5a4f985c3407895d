"""Metrics (every name in one module), logging setup, health endpoints."""
