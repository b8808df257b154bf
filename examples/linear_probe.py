"""Linear probing on `marlin extract` features, the MARLIN paper's frozen-encoder protocol.

    marlin extract CelebV-HQ/cropped --model marlin_vit_base_ytf --out features/
    python examples/linear_probe.py --features features/ \
        --train-labels CelebV-HQ/appearance/train.csv --eval-labels CelebV-HQ/appearance/test.csv \
        --problem-type multi_label_classification --out probe_appearance.json

Temporal mean of each video's window features, standardized, one linear layer trained with AdamW, scored on the
held-out split; the metrics go to a JSON file. The work is `marlin_transformers.evaluation.linear_probe`'s
(`run_linear_probe`); labels files are labels CSVs (`marlin_transformers.data.labels`), whose rows may name a video
by path or by bare file stem.

`--task ffpp|ravdess|mosei-sentiment|mosei-emotions` probes a table a `marlin prepare-*` command wrote
(`marlin_transformers.evaluation.tasks`): it sets `--problem-type` and `--metric-for-best-model` and adds the task's
metrics. With `--data OUT`, the prepared folder, the labels are OUT/<task>/train.csv, val.csv (the best epoch) and
test.csv (scored); `--train-labels`, `--val-labels` and `--eval-labels` still name any table, and win. A video is
scored from its temporal-mean feature, so FF++'s fake probability is that of the mean feature, not a mean of its
windows' probabilities (fine-tuning's).

`--recipe marlin` starts from the paper code's settings instead (`marlin_transformers.evaluation.recipes`: raw
features, Adam 0.5/0.9 at 1e-4, lr halved on plateaus of the training loss until 1e-6, batch 32, per-batch-mean
validation AUC); any flag given overrides its value. The recipe and its values are printed at start and written to the
output JSON (`recipe`).
"""

import argparse
import json
import sys
from dataclasses import asdict, fields
from pathlib import Path

from marlin_transformers.cli.options import add_deprecated_alias
from marlin_transformers.exceptions import MarlinError, missing_extra, with_flags

try:  # the 'train' extra (datasets, evaluate): without it, one line saying so
    from marlin_transformers.evaluation.linear_probe import CACHE_NAME, LinearProbeConfig, run_linear_probe
    from marlin_transformers.evaluation.metrics import PROBLEM_TYPES
    from marlin_transformers.evaluation.recipes import RECIPES, describe, get_recipe, probe_summary
    from marlin_transformers.evaluation.tasks import TASKS, get_task, labels_tables
except ModuleNotFoundError as error:
    sys.exit(f"linear_probe: {missing_extra(error) or error}")

# The flag of each parameter of `run_linear_probe` an error may name.
FLAGS = {"features_dir": "--features", "skip_missing": "--skip-missing", "data": "--data", "task": "--task"}


def main(argv: list[str] | None = None) -> int:
    defaults = LinearProbeConfig()
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--recipe", default="ours", choices=list(RECIPES), help="named preset of the defaults below")
    parser.add_argument("--task", default=None, choices=list(TASKS), help="a prepared task: problem type, metrics")
    parser.add_argument("--data", default=None, help="with --task: a prepared folder (OUT/<task>/*.csv)")
    parser.add_argument("--features", required=True, help="folder written by `marlin extract --out`")
    parser.add_argument("--train-labels", default=None, help="labels CSV of the training videos")
    parser.add_argument("--eval-labels", default=None, help="labels CSV of the held-out (test) videos")
    parser.add_argument("--val-labels", default=None, help="labels CSV to pick the best epoch on (optional)")
    parser.add_argument(
        "--metric-for-best-model", default=defaults.metric_for_best_model, help="validation metric (--val-labels)"
    )
    parser.add_argument("--eval-every", type=int, default=defaults.eval_every, help="epochs between validations")
    parser.add_argument("--problem-type", choices=PROBLEM_TYPES, default="multi_label_classification")
    parser.add_argument("--epochs", type=int, default=defaults.epochs)
    parser.add_argument("--batch-size", type=int, default=defaults.batch_size, help="0 for full-batch training")
    parser.add_argument("--learning-rate", type=float, default=defaults.learning_rate)
    parser.add_argument("--weight-decay", type=float, default=defaults.weight_decay)
    parser.add_argument("--adam-beta1", type=float, default=defaults.adam_beta1)
    parser.add_argument("--adam-beta2", type=float, default=defaults.adam_beta2)
    parser.add_argument(
        "--standardize", action=argparse.BooleanOptionalAction, default=defaults.standardize, help="centre, scale"
    )
    parser.add_argument(
        "--zero-init", action=argparse.BooleanOptionalAction, default=defaults.zero_init, help="start at zero weights"
    )
    parser.add_argument("--lr-scheduler", choices=["constant", "plateau"], default=defaults.lr_scheduler)
    parser.add_argument(
        "--lr-scheduler-kwargs", type=json.loads, default=defaults.lr_scheduler_kwargs, help="plateau settings, JSON"
    )
    parser.add_argument(
        "--stop-learning-rate", type=float, default=defaults.stop_learning_rate, help="stop at this lr (0: never)"
    )
    parser.add_argument("--seed", type=int, default=defaults.seed)
    parser.add_argument("--cache", default=None, help=f"feature cache file (default: FEATURES/{CACHE_NAME})")
    parser.add_argument("--skip-missing", action="store_true", help="leave out labelled videos without features")
    parser.add_argument("--out", default=None, help="metrics JSON (default: FEATURES/linear_probe_metrics.json)")
    add_deprecated_alias(parser, "--output", new="--out")  # `--out`, as marlin's commands say it
    # The task, then the recipe, set the defaults; a flag given on the command line still wins.
    preset_parser = argparse.ArgumentParser(add_help=False)
    preset_parser.add_argument("--recipe", default="ours", choices=list(RECIPES))
    preset_parser.add_argument("--task", default=None, choices=list(TASKS))
    preset_parser.add_argument("--problem-type", default=None)
    presets = preset_parser.parse_known_args(argv)[0]
    task = get_task(presets.task) if presets.task else None
    task_defaults = task.linear_probe_defaults() if task else {}
    recipe = get_recipe(presets.recipe)
    problem_type = presets.problem_type or task_defaults.get("problem_type", parser.get_default("problem_type"))
    parser.set_defaults(**{**task_defaults, **recipe.linear_probe_for(problem_type)})
    args = parser.parse_args(argv)

    try:
        config = LinearProbeConfig(**{f.name: getattr(args, f.name) for f in fields(LinearProbeConfig)})
    except ValueError as error:  # its own checks: --epochs 0, --batch-size -1, --learning-rate 0...
        parser.error(str(error))
    recipe_values = {name: getattr(config, name) for name in recipe.linear_probe_for(args.problem_type)}
    summary = probe_summary(asdict(config))  # the values in force, whatever set them
    if recipe_values:  # a preset, not our defaults
        print(f"linear_probe: {describe(recipe, summary, recipe_values)}", file=sys.stderr)
    try:
        train_labels, val_labels, eval_labels = labels_tables(
            args.data, args.task, args.train_labels, args.val_labels, args.eval_labels, required=("train", "test")
        )
        report = run_linear_probe(
            args.features,
            train_labels,
            eval_labels,
            args.problem_type,
            config,
            val_labels=val_labels,
            cache_path=args.cache,
            skip_missing=args.skip_missing,
            task=task,
        )
    except MarlinError as error:
        flags = {error.parameter: FLAGS[error.parameter]} if error.parameter in FLAGS else {}
        print(f"linear_probe: error: {with_flags(str(error), flags)}", file=sys.stderr)
        return 1
    report["recipe"] = {"recipe": recipe.name, "description": summary, "values": recipe_values}
    output = Path(args.out) if args.out else Path(args.features) / "linear_probe_metrics.json"
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(json.dumps(report, indent=1) + "\n")
    print(json.dumps({"eval": report["eval"], "num_train": report["num_train"], "num_eval": report["num_eval"]}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
