"""Distributed retraining, evaluation and promotion of infill models."""
