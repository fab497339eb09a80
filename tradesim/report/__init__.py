"""HTML tear sheets with plots."""
