"""MARLIN pretraining on face videos with Accelerate: masked reconstruction of Fasking-masked face clips plus a WGAN
critic on the reconstructed tubelets, as in the paper (Cai et al., CVPR 2023).

    # one process (CPU or one GPU)
    python examples/pretrain.py --train-data faces/ --output-dir runs/marlin --cache-dir cache/ \\
        --init-from MCG-NJU/videomae-base --mixed-precision bf16

    # several GPUs (see docs/pretraining.md for FSDP)
    accelerate launch --multi_gpu --num_processes 8 examples/pretrain.py --train-data faces/ ...

This file is the recipe: `get_dataloaders`, `train_step` (one critic step and one generator step on one forward
pass) and `training_function` (the model, the optimizers and schedule, the loop) over the pieces of
`marlin_transformers.pretraining`; edit it as you need. The flags are the fields of
`pretraining.arguments.PretrainingArguments` (`--help` lists them, with the released configs' defaults).

Outputs under `--output-dir`: `checkpoints/step_N/` (written whole or not at all, for `--resume`), TensorBoard logs
(`tensorboard --logdir OUTPUT_DIR`) of every loss term and the learning rate, `train_log.csv`, `eval.csv` (the
reconstruction MSE of a fixed held-out batch, rows `step,mse`) and its plot `eval_curve.png`, reconstruction pictures
`reconstructions/step_N.png` (per clip: original / masked input / reconstruction), `train_config.json` (the
arguments), and the final model in `model/` (`AutoModel` and `AutoModelForPreTraining` load it, critic included).
"""

import json
import sys
from dataclasses import asdict, fields
from pathlib import Path

import torch
from accelerate import Accelerator
from accelerate.utils import DataLoaderConfiguration, broadcast, set_seed
from torch.utils.data import DataLoader
from transformers import HfArgumentParser

from marlin_transformers.cli.options import add_deprecated_alias, quiet_libraries
from marlin_transformers.exceptions import CheckpointError, DatasetError, MarlinError, with_flags
from marlin_transformers.modeling_marlin import masked_patch_targets
from marlin_transformers.pretraining.arguments import PretrainingArguments, parse_config_overrides
from marlin_transformers.pretraining.checkpointing import (
    checkpoint_problem,
    latest_checkpoint,
    load_checkpoint,
    remove_unfinished_checkpoints,
    save_checkpoint,
    save_final_model,
)
from marlin_transformers.pretraining.clips import EpochShuffleSampler
from marlin_transformers.pretraining.losses import critic_objective, detach_critic, generator_objective
from marlin_transformers.pretraining.model import build_model
from marlin_transformers.pretraining.run_log import PretrainingResult, RunLog
from marlin_transformers.pretraining.schedule import TrainingSchedule, optimizer_steps_per_epoch, scaled_learning_rates
from marlin_transformers.pretraining.training_data import (
    clip_videos,
    face_clip_datasets,
    fixed_eval_batch,
    prepared_clip_datasets,
    streaming_train_size,
)


def get_dataloaders(args: PretrainingArguments, model_config, accelerator: Accelerator):
    """The training dataloader (shuffled per epoch from the seed, not yet prepared) and one fixed eval batch: clips of
    `--eval-data`, of the YouTube Faces val split or the dataset's validation split, or else of the last
    `--holdout-fraction` of every training video (or, at 0, of the training videos, drawn with another seed)."""
    # Every clip source draws clips and masks from the seed, `sample_rate` frames apart.
    clips = dict(
        seed=args.seed,
        sample_rate=args.sample_rate,
        clips_per_video=args.clips_per_video,
        eval_batch_size=args.eval_batch_size,
    )
    if args.dataset:  # a prepared face-video dataset: clips and Fasking masks from its stored maps
        with accelerator.main_process_first():  # the main process builds the Arrow cache, the others then read it
            train_dataset, eval_dataset = prepared_clip_datasets(
                args.dataset, model_config, args.streaming, args.shuffle_buffer, **clips
            )
    else:
        face_parser = None
        if args.farl_model:  # the paper's parser; default: the built-in landmark approximation
            from marlin_transformers.pretraining.face_parsing import FarlFaceParser

            face_parser = FarlFaceParser(args.farl_model, accelerator.device, channel_order=args.farl_channel_order)
        train_videos, eval_videos = clip_videos(
            args.train_data, args.eval_data, args.youtube_faces, args.eval_batch_size
        )
        holdout = 0.0 if args.eval_data or args.youtube_faces else args.holdout_fraction
        with accelerator.main_process_first():  # the main process fills the cache, the others then read it
            train_dataset, eval_dataset = face_clip_datasets(
                model_config,
                train_videos,
                eval_videos,
                holdout,
                cache_dir=args.cache_dir,
                crop=args.crop_face,
                face_parser=face_parser,
                **clips,
            )
    loader_kwargs = dict(batch_size=args.batch_size, drop_last=True, pin_memory=torch.cuda.is_available())
    # Streaming: rows in, clips drawn by the collator; a worker reads whole shards (no more workers than shards).
    if args.streaming:
        from marlin_transformers.pretraining.dataset_clips import PreparedClipCollator

        collator = PreparedClipCollator(model_config, args.sample_rate, args.seed)
        num_workers = min(args.num_workers, train_dataset.num_shards)
        train_dataloader = DataLoader(train_dataset, collate_fn=collator, num_workers=num_workers, **loader_kwargs)
    else:
        sampler = EpochShuffleSampler(len(train_dataset), args.seed)
        train_dataloader = DataLoader(train_dataset, sampler=sampler, num_workers=args.num_workers, **loader_kwargs)
    return train_dataloader, fixed_eval_batch(eval_dataset, args.eval_batch_size)


def get_schedule(args: PretrainingArguments, num_clips: int | None, accelerator: Accelerator) -> TrainingSchedule:
    """The schedule in optimizer steps: `--num-epochs` epochs of (batches per process / accumulation) steps (a stream
    of unstated length: `--max-steps` steps), the lr scaled by the total batch unless `--learning-rate` gives it."""
    data = " ".join(args.train_data) or args.youtube_faces or args.dataset
    if num_clips is not None and num_clips < args.batch_size:  # the loader drops the partial batch
        raise DatasetError(
            f"{data}: {num_clips} training clips, fewer than one batch of {args.batch_size}; "
            "lower --batch-size or add videos."
        )
    if num_clips is not None:
        steps_per_epoch = optimizer_steps_per_epoch(
            num_clips, args.batch_size, accelerator.num_processes, accelerator.gradient_accumulation_steps
        )
        total_steps = args.num_epochs * steps_per_epoch
    elif args.max_steps is None:
        raise DatasetError(
            f"{data}: a streaming split of unstated size (no split sizes in its dataset card); give --max-steps."
        )
    else:  # a stream of unknown length: --max-steps spans the schedule, in num_epochs nominal epochs
        steps_per_epoch, total_steps = max(1, args.max_steps // args.num_epochs), args.max_steps
    total_batch_size = args.batch_size * accelerator.num_processes * args.gradient_accumulation_steps
    lr, min_lr = scaled_learning_rates(total_batch_size, args.base_learning_rate, args.base_min_learning_rate)
    return TrainingSchedule(
        steps_per_epoch,
        total_steps,
        max_steps=min(args.max_steps or total_steps, total_steps),
        learning_rate=lr if args.learning_rate is None else args.learning_rate,
        min_learning_rate=min_lr if args.min_learning_rate is None else args.min_learning_rate,
        warmup_epochs=args.warmup_epochs,
        num_epochs=args.num_epochs,
        lr_schedule=args.lr_schedule,
    )


def train_step(batch, model, critic, g_optimizer, d_optimizer, accelerator, adv_weight, gp_weight, gp_generator):
    """One critic step and one generator step on a batch (`pixel_values_videos` (batch, frames, 3, size, size) in
    [0, 1], `bool_masked_pos` (batch, tokens)), with one forward pass of the generator. The critic is kept whole on
    every process (no DDP/FSDP wrapper). The loss terms, detached (`critic_objective`, `generator_objective`)."""
    pixel_values_videos, bool_masked_pos = batch["pixel_values_videos"], batch["bool_masked_pos"]
    config = accelerator.unwrap_model(model).config
    with accelerator.autocast():
        logits = model(pixel_values_videos, bool_masked_pos, return_loss=False).logits  # (b, masked, c*pt*ph*pw)
        targets = masked_patch_targets(pixel_values_videos, bool_masked_pos, config.patch_size, config.tubelet_size)
        # Critic step, on the detached prediction.
        d_loss, critic_terms = critic_objective(critic, logits.detach(), targets, gp_weight, gp_generator)
    accelerator.backward(d_loss)
    if accelerator.sync_gradients and accelerator.num_processes > 1:  # no wrapper averages the critic's gradients
        for param in critic.parameters():
            param.grad = accelerator.reduce(param.grad, reduction="mean")
    d_optimizer.step()
    d_optimizer.zero_grad()

    # Generator step: the same prediction, scored by the updated critic, whose weights get no gradient from it.
    with accelerator.autocast():
        g_loss, generator_terms = generator_objective(critic, logits, targets, adv_weight)
    accelerator.backward(g_loss)
    g_optimizer.step()
    g_optimizer.zero_grad()
    return {name: value.detach() for name, value in {**generator_terms, **critic_terms}.items()}


def get_resume_checkpoint(args: PretrainingArguments, accelerator: Accelerator) -> Path | None:
    """The checkpoint `--resume` names, settled before anything is built so that a wrong one fails at once."""
    if args.resume == "latest":
        report = lambda line: accelerator.print(f"--resume latest: {line}")  # noqa: E731
        resume = latest_checkpoint(args.output_dir, report=report)
        if resume is None:
            report(f"no complete checkpoint in {Path(args.output_dir) / 'checkpoints'}; starting at step 0.")
        return resume
    if args.resume and (problem := checkpoint_problem(args.resume)) is not None:
        raise CheckpointError(
            f"--resume {args.resume}: not a complete pretraining checkpoint ({problem}); give a checkpoints/step_N "
            "folder a run saved whole, or 'latest'."
        )
    return Path(args.resume) if args.resume else None


def get_model(args: PretrainingArguments, accelerator: Accelerator):
    """(generator, critic): the model `--model-config` / `--init-from` give, its critic taken out of it to train with
    an optimizer of its own, and kept whole on every process (no DDP/FSDP wrapper: `train_step` averages its
    gradients)."""
    config_overrides = parse_config_overrides(args.config_override)
    model = build_model(args.model_config, args.init_from, config_overrides, args.videomae_head)
    if args.adv_weight is not None:
        model.config.adv_weight = args.adv_weight
    if args.gradient_checkpointing:
        model.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
    model, critic = detach_critic(model.train())
    critic.to(accelerator.device)
    if accelerator.num_processes > 1:  # identical critics everywhere, whatever each process initialized
        for param in critic.parameters():
            param.data = broadcast(param.data)
    return model, critic


def start_outputs(args: PretrainingArguments, accelerator: Accelerator) -> None:
    """TensorBoard, the output folder without the unfinished checkpoints of a killed run, `train_config.json`."""
    if args.tensorboard:
        hparams = {k: v for k, v in asdict(args).items() if isinstance(v, (int, float, str, bool))}
        accelerator.init_trackers("marlin_pretrain", config=hparams)
    if accelerator.is_main_process:
        checkpoints_dir = Path(args.output_dir) / "checkpoints"
        checkpoints_dir.parent.mkdir(parents=True, exist_ok=True)
        for leftover in remove_unfinished_checkpoints(checkpoints_dir) if checkpoints_dir.is_dir() else []:
            accelerator.print(f"removed {leftover}, an unfinished checkpoint of an interrupted run")
        (checkpoints_dir.parent / "train_config.json").write_text(json.dumps(asdict(args), indent=2, default=str))


def training_function(args: PretrainingArguments) -> PretrainingResult:
    """Pretrain MARLIN as `args` says, writing the outputs the module docstring lists under `args.output_dir`."""
    accelerator = Accelerator(
        mixed_precision=args.mixed_precision,
        gradient_accumulation_steps=args.gradient_accumulation_steps,
        log_with="tensorboard" if args.tensorboard else None,
        project_dir=args.output_dir,
        dataloader_config=DataLoaderConfiguration(use_seedable_sampler=False),
        cpu=args.cpu,
    )
    resume = get_resume_checkpoint(args, accelerator)
    set_seed(args.seed)
    model, critic = get_model(args, accelerator)
    adv_weight, gp_weight = model.config.adv_weight, args.gp_weight
    train_dataloader, eval_batch = get_dataloaders(args, model.config, accelerator)
    num_clips = streaming_train_size(train_dataloader) if args.streaming else len(train_dataloader.dataset)
    schedule = get_schedule(args, num_clips, accelerator)

    # AdamW for each network; the lr is set before every step from the schedule.
    optimizer_kwargs = dict(lr=schedule.learning_rate, betas=(args.adam_beta1, args.adam_beta2))
    g_optimizer = torch.optim.AdamW(model.parameters(), weight_decay=args.weight_decay, **optimizer_kwargs)
    d_optimizer = torch.optim.AdamW(critic.parameters(), weight_decay=args.weight_decay, **optimizer_kwargs)
    model, g_optimizer, d_optimizer, train_dataloader = accelerator.prepare(
        model, g_optimizer, d_optimizer, train_dataloader
    )
    step = 0  # optimizer steps done
    if resume is not None:
        step = load_checkpoint(accelerator, resume, critic, trust=args.trust_checkpoint)
        accelerator.print(f"resumed from {resume} at step {step}")
    accumulation = accelerator.gradient_accumulation_steps
    epoch_micro_batches = schedule.steps_per_epoch * accumulation if args.streaming else len(train_dataloader)
    first_epoch, skip_batches = divmod(step * accumulation, epoch_micro_batches)  # where a resumed run starts
    start_outputs(args, accelerator)
    output_dir, max_steps = Path(args.output_dir), schedule.max_steps
    log = RunLog(accelerator, output_dir, max_steps, step, image_steps=args.image_steps, quiet=args.quiet)

    if step == 0 and args.eval_steps:
        log.log_eval(0, model, eval_batch)
    for epoch in range(first_epoch, args.num_epochs):
        if step >= max_steps:
            break
        train_dataloader.set_epoch(epoch)
        train_dataloader.dataset.set_epoch(epoch)  # Accelerate forwards it only in some layouts
        if hasattr(train_dataloader.collate_fn, "set_epoch"):  # streaming: the collator draws the clips
            train_dataloader.collate_fn.set_epoch(epoch)
        batches = train_dataloader
        if epoch == first_epoch and skip_batches:
            batches = accelerator.skip_first_batches(train_dataloader, skip_batches)
        for batch in batches:
            lr = schedule.learning_rate_at(step)
            for group in [*g_optimizer.param_groups, *d_optimizer.param_groups]:
                group["lr"] = lr
            gp_generator = torch.Generator().manual_seed(args.seed * 1_000_003 + step)
            with accelerator.accumulate(model):
                losses = train_step(
                    batch, model, critic, g_optimizer, d_optimizer, accelerator, adv_weight, gp_weight, gp_generator
                )
            if not accelerator.sync_gradients:
                continue
            step += 1
            log.bar.update(1)
            if step % args.logging_steps == 0 or step == max_steps:
                log.log_losses(step, losses, lr)
            if args.eval_steps and (step % args.eval_steps == 0 or step == max_steps):
                log.log_eval(step, model, eval_batch)
            if args.checkpointing_steps and step % args.checkpointing_steps == 0:
                save_checkpoint(accelerator, critic, step, output_dir / "checkpoints", keep=args.keep_checkpoints)
            if step >= max_steps:
                break

    log.close()
    accelerator.wait_for_everyone()
    save_final_model(accelerator, model, critic, output_dir / "model")
    accelerator.end_training()
    return PretrainingResult(step, log.eval_curve, log.train_log, output_dir / "model")


# Library parameters whose flag is not `--` and their name, dashed (a field of PretrainingArguments).
FLAGS = {"config_overrides": "--config-override"}


def say(error: Exception) -> str:
    """An error's message with the flag of each field or parameter it names (`batch_size (--batch-size) is 0`,
    `... with config_overrides (--config-override)`), or the flag first where it names none (`--config-override
    hidden_size: give KEY=VALUE`)."""
    names = [*getattr(error, "fields", ()), getattr(error, "parameter", None)]
    known = {*FLAGS, *(f.name for f in fields(PretrainingArguments))}
    flags = {name: FLAGS.get(name, "--" + name.replace("_", "-")) for name in names if name in known}
    return with_flags(str(error), flags)


def parse_args(argv: list[str] | None = None) -> PretrainingArguments:
    parser = HfArgumentParser(PretrainingArguments, description="MARLIN pretraining (masked reconstruction + critic).")
    add_deprecated_alias(parser, "--farl_parser", "--farl-parser", new="--farl-model")  # marlin's commands' names
    add_deprecated_alias(parser, "--crop", new="--crop-face")
    try:
        (args,) = parser.parse_args_into_dataclasses(args=argv)
    except ValueError as error:  # PretrainingArguments' own checks
        parser.error(say(error))
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    quiet_libraries(args.verbose)  # our bar and lines the only progress on the terminal
    try:
        result = training_function(args)
    except MarlinError as error:
        print(f"pretrain: error: {say(error)}", file=sys.stderr)
        return 1
    if result.eval_curve:
        (first_step, first_mse), (last_step, last_mse) = result.eval_curve[0], result.eval_curve[-1]
        print(f"eval reconstruction MSE: step {first_step} {first_mse:.5f} -> step {last_step} {last_mse:.5f}")
    print(f"model saved to {result.model_dir}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
