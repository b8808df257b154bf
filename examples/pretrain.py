"""MARLIN pretraining on a folder of face videos, with Accelerate.

    # one process (CPU or one GPU)
    python examples/pretrain.py --train-data faces/ --output-dir runs/marlin --cache-dir cache/ \\
        --init-from MCG-NJU/videomae-base --mixed-precision bf16

    # several GPUs (see docs/pretraining.md for FSDP)
    accelerate launch --multi_gpu --num_processes 8 examples/pretrain.py --train-data faces/ ...

The flags are the fields of `marlin_transformers.pretraining.training.PretrainingArguments` (`--help` lists them
with the released configs' defaults); the loop is `training.train`, whose docstring lists what is written under
`--output-dir` (checkpoints for `--resume`, TensorBoard logs, `train_log.csv`, `eval.csv`, reconstruction pictures,
and the final model in `model/`).
"""

import sys

from transformers import HfArgumentParser

from marlin_transformers.exceptions import MarlinError
from marlin_transformers.pretraining.training import PretrainingArguments, train


def parse_args(argv: list[str] | None = None) -> PretrainingArguments:
    parser = HfArgumentParser(PretrainingArguments, description="MARLIN pretraining (masked reconstruction + critic).")
    try:
        (args,) = parser.parse_args_into_dataclasses(args=argv)
    except ValueError as error:  # PretrainingArguments' own checks
        parser.error(str(error))
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        result = train(args)
    except MarlinError as error:
        print(f"pretrain: error: {error}", file=sys.stderr)
        return 1
    if result.eval_curve:
        (first_step, first_mse), (last_step, last_mse) = result.eval_curve[0], result.eval_curve[-1]
        print(f"eval reconstruction MSE: step {first_step} {first_mse:.5f} -> step {last_step} {last_mse:.5f}")
    print(f"model saved to {result.model_dir}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
