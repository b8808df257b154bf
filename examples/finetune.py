"""Fine-tune MARLIN on labelled face videos with `transformers.Trainer`, or train only its head (`--freeze-encoder`).

    python examples/finetune.py --model marlin_vit_base_ytf \
        --train-data train.csv --eval-data val.csv \
        --problem-type multi_label_classification \
        --output-dir runs/celebvhq_appearance --metric-for-best-model roc_auc

`--model` is any MARLIN checkpoint `marlin_transformers.loading.load_marlin` reads: a converted folder, a Hub id,
or an official `.pt`/`.ckpt` file. `--train-data`/`--eval-data` are a labels CSV, a folder of class subfolders, a
JSON/JSON Lines file or a saved `datasets` dataset (`--train-split`/`--eval-split`). Videos are decoded, and with
`--crop-face` face-cropped, on the fly; a training video gives one random window per epoch, an evaluation video the
mean logits of all its windows. The pieces, and the layouts, are documented in `marlin_transformers.evaluation`
(`clip_dataset`, `finetuning`, `trainer`).

Every `TrainingArguments` flag works, with this recipe's defaults (`FinetuningArguments`): evaluation and a
checkpoint every epoch, the best by `--metric-for-best-model` (default `roc_auc`, `mse` for regression) reloaded at
the end and saved to `--output-dir` as a folder `AutoModelForVideoClassification.from_pretrained` loads;
`--push-to-hub` uploads that folder. Metrics come from `marlin_transformers.evaluation.metrics`.

`--lora` trains LoRA adapters (peft) on the encoder's linear layers (`--lora-rank`, `--lora-alpha`,
`--lora-target-modules`; the head trains in full) and saves the adapter, or with `--merge-lora` merged weights that
load like any MARLIN folder (`evaluation.finetuning.save_finetuned` says how to load an adapter).

`--task ffpp|ravdess|mosei-sentiment|mosei-emotions` trains on a table a `marlin prepare-*` command wrote
(`marlin_transformers.evaluation.tasks`): it sets `--problem-type`, `--metric-for-best-model`,
`--window-aggregation` (FF++ averages the windows' probabilities) and adds the task's metrics (`evaluation.metrics`).
With `--data OUT`, the prepared folder, the tables are OUT/<task>/train.csv, val.csv (selection) and test.csv (scored
once, at the end); `--train-data`, `--eval-data` and `--test-data` still name any table, and win.

`--recipe marlin` starts from the MARLIN paper code's recipe instead of ours (`marlin_transformers.evaluation.recipes`:
Adam 0.5/0.9, learning rate halved on plateaus of the training loss, stop at lr 1e-6, batch 32, one random clip per
video, per-batch-mean validation AUC); any flag given overrides its value. The recipe's values are printed at start
and written to `OUTPUT_DIR/recipe.json`; with one random clip per video, the all-windows evaluation is reported too.

Several GPUs: `accelerate launch examples/finetune.py ...` or `torchrun --nproc-per-node N examples/finetune.py ...`;
`--per-device-*-batch-size` are per process.
"""

import argparse
import json
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path

from transformers import HfArgumentParser, set_seed

from marlin_transformers import MarlinConfig
from marlin_transformers.exceptions import MarlinError, missing_extra, with_flags
from marlin_transformers.hub_folders import push_folder_to_hub
from marlin_transformers.loading import load_marlin
from marlin_transformers.model_card import render_finetuned_card

# The flags of library parameters an error may name (`read_labels`' split is set by either).
FLAGS = {"split": "--train-split, --eval-split or --test-split", "data": "--data", "task": "--task"}

try:  # the 'train' extra (datasets, evaluate): without it, one line saying so
    from marlin_transformers.evaluation.clip_dataset import EVAL_CLIPS, ClipOptions, build_datasets, build_test_dataset
    from marlin_transformers.evaluation.finetuning import (
        LORA_TARGET_MODULES,
        add_lora,
        build_classifier,
        save_finetuned,
    )
    from marlin_transformers.evaluation.recipes import RECIPES, describe, finetuning_summary, get_recipe
    from marlin_transformers.evaluation.selection import finite_metrics
    from marlin_transformers.evaluation.tasks import TASKS, get_task, labels_tables
    from marlin_transformers.evaluation.trainer import FinetuningArguments, build_trainer
except ModuleNotFoundError as error:
    sys.exit(f"finetune: {missing_extra(error) or error}")


@dataclass
class ModelArguments:
    model: str = field(metadata={"help": "converted MARLIN folder, Hub id or official .pt/.ckpt file"})
    freeze_encoder: bool = field(default=False, metadata={"help": "train only the head (an on-the-fly probe)"})
    lora: bool = field(
        default=False, metadata={"help": "train LoRA adapters on the encoder (peft) instead of its weights"}
    )
    lora_rank: int = field(default=8, metadata={"help": "rank of each LoRA adapter"})
    lora_alpha: float = field(default=16.0, metadata={"help": "LoRA scaling numerator (scale = alpha / rank)"})
    lora_dropout: float = field(default=0.0, metadata={"help": "dropout on the adapters' input"})
    lora_target_modules: list[str] = field(
        default_factory=lambda: list(LORA_TARGET_MODULES),
        metadata={"help": "encoder linear layers that get adapters (default: qkv proj fc1 fc2)"},
    )
    merge_lora: bool = field(
        default=False, metadata={"help": "save merged weights (a plain MARLIN folder) instead of the adapter"}
    )


@dataclass
class DataArguments:
    task: str | None = field(
        default=None,
        metadata={"help": "a prepared task: its problem type, metrics and selection", "choices": list(TASKS)},
    )
    data: str | None = field(default=None, metadata={"help": "with --task: a prepared folder (OUT/<task>/*.csv)"})
    train_data: str | None = field(
        default=None, metadata={"help": "labels CSV, class folders, JSON(L) or saved dataset"}
    )
    eval_data: str | None = field(
        default=None, metadata={"help": "as --train-data, for evaluation and model selection"}
    )
    test_data: str | None = field(default=None, metadata={"help": "as --train-data, scored once after training"})
    train_split: str | None = field(default="train", metadata={"help": "split of a saved DatasetDict"})
    eval_split: str | None = field(
        default=None, metadata={"help": "split of a saved DatasetDict (default: validation/val/test)"}
    )
    test_split: str | None = field(default="test", metadata={"help": "split of a saved DatasetDict (--test-data)"})


@dataclass
class ClipArguments:
    """The fields of `ClipOptions` a user sets; the window length and frame size come from the model."""

    crop_face: bool = field(
        default=ClipOptions.crop_face, metadata={"help": "track and crop the face (in-the-wild videos)"}
    )
    face_margin: float = field(default=ClipOptions.face_margin, metadata={"help": "crop side / face box side"})
    sample_rate: int = field(default=ClipOptions.sample_rate, metadata={"help": "take every n-th decoded frame"})
    train_stride: int = field(
        default=ClipOptions.train_stride, metadata={"help": "training windows start every n sampled frames"}
    )
    eval_stride: int | None = field(
        default=ClipOptions.eval_stride, metadata={"help": "evaluation windows (default: num_frames)"}
    )
    eval_clips: str = field(
        default=ClipOptions.eval_clips, metadata={"help": "windows scored per video", "choices": list(EVAL_CLIPS)}
    )
    max_eval_windows: int = field(
        default=ClipOptions.max_eval_windows, metadata={"help": "at most n evaluation windows a video (0: all)"}
    )


def main(argv: list[str] | None = None) -> int:
    parser = HfArgumentParser((ModelArguments, DataArguments, ClipArguments, FinetuningArguments))
    # The task, then the recipe, set the defaults; a flag given on the command line still wins.
    preset_parser = argparse.ArgumentParser(add_help=False)
    preset_parser.add_argument("--recipe", default="ours", choices=list(RECIPES))
    preset_parser.add_argument("--task", default=None, choices=list(TASKS))
    preset_parser.add_argument("--problem-type", "--problem_type", default=None)
    presets = preset_parser.parse_known_args(argv)[0]
    task_defaults = get_task(presets.task).finetuning_defaults() if presets.task else {}
    problem_type = presets.problem_type or task_defaults.get("problem_type", FinetuningArguments.problem_type)
    parser.set_defaults(**{**task_defaults, **get_recipe(presets.recipe).finetuning_for(problem_type)})
    try:
        model_args, data_args, clip_args, training_args = parser.parse_args_into_dataclasses(args=argv)
        ClipOptions(**asdict(clip_args))  # its checks, before the model loads
    except ValueError as error:  # FinetuningArguments' (TrainingArguments') and ClipOptions' own checks
        parser.error(
            with_flags(str(error), {name: "--" + name.replace("_", "-") for name in getattr(error, "fields", ())})
        )
    try:
        return finetune(model_args, data_args, clip_args, training_args)
    except MarlinError as error:
        flags = {error.parameter: FLAGS[error.parameter]} if error.parameter in FLAGS else {}
        print(f"finetune: error: {with_flags(str(error), flags)}", file=sys.stderr)
        return 1


def finetune(
    model_args: ModelArguments, data_args: DataArguments, clip_args: ClipArguments, training_args: FinetuningArguments
) -> int:
    """Load, fine-tune, evaluate and save (and push); user errors propagate as `MarlinError`s. Returns 0."""
    if model_args.lora and model_args.freeze_encoder:
        raise MarlinError("--lora and --freeze-encoder exclude each other: pick one.")
    recipe = get_recipe(training_args.recipe)
    problem_type = training_args.problem_type
    settings = {**asdict(clip_args), **training_args.to_dict()}
    recipe_values = {name: settings[name] for name in recipe.finetuning_for(problem_type)}
    summary = finetuning_summary(settings)  # the values in force, whatever set them
    if recipe_values:  # a preset, not our defaults
        print(f"finetune: {describe(recipe, summary, recipe_values)}", file=sys.stderr)
    train_data, eval_data, test_data = labels_tables(
        data_args.data, data_args.task, data_args.train_data, data_args.eval_data, data_args.test_data
    )
    encoder = load_marlin(model_args.model)
    options = ClipOptions(
        num_frames=encoder.config.num_frames, image_size=encoder.config.image_size, **asdict(clip_args)
    )
    train_dataset, eval_dataset, label_names = build_datasets(
        train_data, eval_data, problem_type, options, training_args.seed, data_args.train_split, data_args.eval_split
    )
    test_dataset = None
    if test_data is not None:
        test_dataset = build_test_dataset(
            test_data,
            train_data,
            problem_type,
            options,
            training_args.seed,
            data_args.train_split,
            data_args.test_split,
        )
    task_metrics = None
    if data_args.task:
        task = get_task(data_args.task)
        task.check_label_names(label_names, train_data)
        task_metrics = task.metrics_for(label_names)
    set_seed(training_args.seed)  # the new head and the adapters start the same in every run of a seed
    model = build_classifier(encoder, problem_type, label_names, model_args.freeze_encoder)
    if model_args.lora:
        model = add_lora(
            model,
            model_args.lora_rank,
            model_args.lora_alpha,
            model_args.lora_dropout,
            model_args.lora_target_modules,
        )

    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    total = sum(p.numel() for p in model.parameters())
    print(f"finetune: {trainable:,} of {total:,} parameters trained ({100 * trainable / total:.2f}%)", file=sys.stderr)
    trainer = build_trainer(model, training_args, problem_type, train_dataset, eval_dataset, task_metrics)
    if trainer.is_world_process_zero():  # once the inputs are known good: a failed start leaves no folder
        Path(training_args.output_dir).mkdir(parents=True, exist_ok=True)
        recipe_record = {"recipe": recipe.name, "description": summary, "values": recipe_values}
        (Path(training_args.output_dir) / "recipe.json").write_text(json.dumps(recipe_record, indent=1) + "\n")
    trainer.train(resume_from_checkpoint=training_args.resume_from_checkpoint)
    metrics = trainer.evaluate()  # the best checkpoint, reloaded by load_best_model_at_end
    trainer.save_metrics("eval", metrics)
    all_windows = None
    if options.eval_clips != "all":  # the recipe's one clip per video, and beside it every window (ours)
        all_windows = trainer.evaluate(eval_dataset.all_windows(), metric_key_prefix="eval_all_windows")
        trainer.save_metrics("eval_all_windows", all_windows)
    test_metrics = None
    if test_dataset is not None:  # the selected model, once, on the held-out split
        test_metrics = trainer.evaluate(test_dataset, metric_key_prefix="test")
        trainer.save_metrics("test", test_metrics)
    if trainer.is_world_process_zero():
        save_finetuned(trainer.model, training_args.output_dir, merge_lora=model_args.merge_lora)
        card = render_finetuned_card(
            MarlinConfig.from_pretrained(training_args.output_dir),
            model_args.model,
            train_data,
            eval_data,
            finite_metrics(metrics),
            trainable,
        )
        (Path(training_args.output_dir) / "README.md").write_text(card)
        summary = {"eval": finite_metrics(metrics), "best_checkpoint": trainer.state.best_model_checkpoint}
        if data_args.task:
            summary["task"] = data_args.task
        if all_windows is not None:
            summary["eval_all_windows"] = finite_metrics(all_windows)
        if test_metrics is not None:
            summary["test"] = finite_metrics(test_metrics)
        print(json.dumps({**summary, "trainable_parameters": trainable, "parameters": total}))
        if training_args.push_to_hub:
            repo_id = training_args.hub_model_id or Path(training_args.output_dir).absolute().name
            url = push_folder_to_hub(training_args.output_dir, repo_id, training_args.hub_token, "MARLIN fine-tuned")
            print(f"pushed to {url}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
