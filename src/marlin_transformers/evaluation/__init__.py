"""Downstream evaluation of MARLIN features: the paper's metrics, fine-tuning and linear probing.

`metrics` holds the downstream metrics (an offline `evaluate` module); `selection` the choice of the best model by
a metric; `probe_head` the one linear-probe head; the pieces `examples/finetune.py` gives `transformers.Trainer` are
`clip_dataset` (labelled videos as clips, collator), `finetuning` (the classifier: built, LoRA, exported, saved) and
`trainer` (`FinetuningArguments`, `VideoClipTrainer`, its callbacks); `linear_probe` the paper's probe on `marlin
extract` features; `tasks` the downstream tasks `--task` names (FF++, RAVDESS, CMU-MOSEI). Nothing is imported here,
so `import marlin_transformers.evaluation` stays cheap.
"""
