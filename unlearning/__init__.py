"""Offline unlearning tooling: data, training, evaluation and the embedded demo model."""
