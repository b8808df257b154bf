"""Downstream evaluation of MARLIN features: the paper's metrics, fine-tuning and linear probing."""
