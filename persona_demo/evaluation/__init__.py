"""Scoring methods on a split: generation metrics, teacher-forced NLL with its personal share, the collapse
detector."""
