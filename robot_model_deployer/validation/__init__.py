"""Validation: agreement measures, shadow comparison and live health."""
