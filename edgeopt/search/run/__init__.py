"""A run from setup to reports: prepare, search loop, progress, final measure, read back."""
