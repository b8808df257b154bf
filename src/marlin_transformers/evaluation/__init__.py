"""Downstream evaluation of MARLIN features: the paper's metrics, fine-tuning and linear probing.

`metrics` holds the downstream metrics (an offline `evaluate` module); `selection` the choice of the best model by
a metric; `finetuning` the pieces `examples/finetune.py` gives `transformers.Trainer` (clip datasets, collator,
probe head, `FinetuningArguments`); `linear_probe` the paper's probe on `marlin extract` features. Nothing is
imported here, so `import marlin_transformers.evaluation` stays cheap.
"""
