"""Metrics, per-step rewards, hack-resistant scores, hack audits and evaluation statistics."""
