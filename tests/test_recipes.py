"""The paper code's recipe (`--recipe marlin`) beside ours: its optimizer, plateau on the training loss, stop at an lr
floor, one seeded random clip, per-batch-mean AUC; and the linear probe's version of it."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from transformers import TrainerControl

from marlin_transformers.evaluation import clip_dataset, trainer
from marlin_transformers.evaluation.linear_probe import LinearProbeConfig, train_linear_probe
from marlin_transformers.evaluation.metrics import batch_mean_auroc, build_compute_metrics, multi_label_metrics
from marlin_transformers.evaluation.recipes import PAPER_PLATEAU, RECIPES
from test_finetune import FAST, class_folders, finetune, tiny_model  # noqa: F401  (fixtures)
from test_linear_probe import linear_probe, write_csv, write_extract_output  # noqa: F401  (fixture)
from video_factory import encode_video, indexed_frames, read_frame_index

ROOT = Path(__file__).resolve().parents[1]


def test_batch_mean_auroc_is_the_weighted_mean_of_per_batch_aucs():
    rng = np.random.default_rng(0)
    logits, labels = rng.normal(size=(10, 3)), rng.integers(0, 2, (10, 3))
    per_batch = [multi_label_metrics(logits[s : s + 4], labels[s : s + 4])["roc_auc"] for s in (0, 4, 8)]
    expected = (4 * per_batch[0] + 4 * per_batch[1] + 2 * per_batch[2]) / 10
    assert batch_mean_auroc(logits, labels, "multi_label_classification", 4) == pytest.approx(expected)
    whole = multi_label_metrics(logits, labels)["roc_auc"]
    assert expected != pytest.approx(whole)  # a different number from the whole split's AUC
    # Trainer's compute_metrics adds it only when given the evaluation batch size
    prediction = type("EvalPrediction", (), {"predictions": logits, "label_ids": labels})()
    assert "roc_auc_batch_mean" not in build_compute_metrics("multi_label_classification")(prediction)
    with_batches = build_compute_metrics("multi_label_classification", batch_size=4)(prediction)
    assert with_batches["roc_auc_batch_mean"] == pytest.approx(expected)


def test_training_loss_plateau_and_stop_follow_the_paper_code():
    """The lr per epoch under a training loss that never improves, against torch's ReduceLROnPlateau stepped once an
    epoch as Lightning does, and the stop at the first epoch that ends at most 1e-6 (EarlyStoppingLR)."""
    weight = torch.nn.Parameter(torch.zeros(1))
    optimizer = torch.optim.Adam([weight], lr=1e-4, betas=(0.5, 0.9))
    scheduler = trainer.TrainingLossPlateau(optimizer, **PAPER_PLATEAU)
    reference_optimizer = torch.optim.Adam([torch.nn.Parameter(torch.zeros(1))], lr=1e-4)
    reference = torch.optim.lr_scheduler.ReduceLROnPlateau(reference_optimizer, factor=0.5, patience=7, min_lr=1e-8)
    stop = trainer.StopAtLearningRateCallback(1e-6)
    ours, theirs, stopped_after = [], [], None
    for epoch in range(1, 80):
        for _ in range(3):  # the Trainer steps it every batch: nothing changes
            scheduler.record(torch.tensor(1.0))
            optimizer.step()
            scheduler.step()
        trainer.PlateauCallback().on_epoch_end(None, None, None, lr_scheduler=scheduler)
        reference.step(1.0)
        ours.append(optimizer.param_groups[0]["lr"])
        theirs.append(reference_optimizer.param_groups[0]["lr"])
        control = stop.on_epoch_end(None, None, TrainerControl(), optimizer=optimizer) or TrainerControl()
        if stopped_after is None and all(group["lr"] <= 1e-6 for group in optimizer.param_groups):
            stopped_after = epoch
            assert control.should_training_stop is False  # the callback sets it on the control it is given
    assert ours == theirs
    assert ours[7] == 1e-4 and ours[8] == 5e-5  # patience 7: the 8th epoch without improvement halves it
    assert stopped_after == 9 + 8 * 6  # 7 halvings take 1e-4 under 1e-6
    assert scheduler.get_last_lr() == [ours[-1]]
    state = scheduler.state_dict()
    json.dumps(state)  # plain numbers: Trainer's checkpoint reads it back with weights_only
    control = TrainerControl()
    stop.on_epoch_end(None, None, control, optimizer=optimizer)
    assert control.should_training_stop


def test_random_eval_clip_is_one_seeded_window(tmp_path):
    video = encode_video(tmp_path / "indexed.mp4", indexed_frames(40, 48, 64))
    options = clip_dataset.ClipOptions(num_frames=4, image_size=32, sample_rate=2, train_stride=1, eval_clips="random")
    starts = {}
    for seed in range(6):
        labels = np.array([0])
        dataset = clip_dataset.VideoClipDataset([video], labels, "single_label_classification", options, False, seed)
        item = dataset[0]["pixel_values_videos"]
        assert item.shape == (1, 4, 3, 32, 32)
        again = dataset[0]["pixel_values_videos"]
        torch.testing.assert_close(item, again)  # the same window at every evaluation of a seed
        starts[seed] = read_frame_index(dataset.train_clip(video, np.random.default_rng([seed, 0]))[0])
    assert len(set(starts.values())) > 1  # the seed picks the window
    assert dataset.all_windows()[0]["pixel_values_videos"].shape[0] > 1  # every window of the video
    assert dataset.options.eval_clips == "random"  # the view leaves the dataset alone


def test_finetune_recipe_marlin_end_to_end(finetune, tiny_model, class_folders, tmp_path, capsys):  # noqa: F811
    out = tmp_path / "run"
    argv = ["--model", str(tiny_model), "--train-data", str(class_folders[0]), "--eval-data", str(class_folders[1])]
    argv += ["--problem-type", "single_label_classification", "--output-dir", str(out), *FAST, "--recipe", "marlin"]
    assert finetune.main(argv) == 0
    printed = capsys.readouterr()
    assert "recipe marlin:" in printed.err
    record = json.loads((out / "recipe.json").read_text())
    values = record["values"]
    assert record["recipe"] == "marlin" and set(values) == set(RECIPES["marlin"].finetuning)
    assert "Adam, betas 0.5/0.9" in record["description"] and "without a lower train_loss" in record["description"]
    assert values["adam_beta1"] == 0.5 and values["adam_beta2"] == 0.9 and values["weight_decay"] == 0.0
    assert values["lr_scheduler_type"] == "reduce_lr_on_plateau" and values["plateau_monitor"] == "train_loss"
    assert values["eval_clips"] == "random" and values["metric_for_best_model"] == "roc_auc_batch_mean"
    # flags given win over the recipe (FAST sets these)
    assert values["per_device_train_batch_size"] == 2 and values["num_train_epochs"] == 2.0
    assert values["learning_rate"] == 1e-3
    state = json.loads(next(out.glob("checkpoint-*/trainer_state.json")).read_text())
    assert all("eval_roc_auc_batch_mean" in e for e in state["log_history"] if "eval_loss" in e)
    # the scheduler Trainer saved is the training-loss plateau, not Trainer's own (stepped on the metric)
    assert "plateau" in torch.load(next(out.glob("checkpoint-*/scheduler.pt")), weights_only=True)
    lrs = [e["learning_rate"] for e in state["log_history"] if "learning_rate" in e]
    assert lrs and set(lrs) == {1e-3}  # a plateau holds the lr within its patience (no linear decay)
    summary = json.loads(printed.out.strip().splitlines()[-1])
    assert "eval_roc_auc_batch_mean" in summary["eval"]
    assert "eval_all_windows_accuracy" in summary["eval_all_windows"]  # ours beside the one random clip
    assert (out / "eval_all_windows_results.json").is_file()


def test_finetune_recipe_ours_is_unchanged():
    parser_defaults = trainer.FinetuningArguments(output_dir="x")
    assert RECIPES["ours"].finetuning == {} and RECIPES["ours"].linear_probe == {}
    assert parser_defaults.recipe == "ours" and parser_defaults.stop_learning_rate == 0.0
    assert parser_defaults.weight_decay == 0.05 and parser_defaults.lr_scheduler_type == "linear"
    with pytest.raises(ValueError, match="plateau_monitor"):
        trainer.FinetuningArguments(output_dir="x", plateau_monitor="val")


PLATEAU = '{"factor": 0.1, "patience": 0, "threshold": 0.5}'


def test_linear_probe_recipe_marlin(linear_probe, tmp_path, capsys):  # noqa: F811
    rng = np.random.default_rng(0)
    classes = rng.integers(0, 2, 120)
    # a large common offset: raw features, as the paper code feeds them, differ from standardized ones
    centres = 50.0 + rng.normal(scale=1.5, size=(2, 24))
    inputs = write_extract_output(tmp_path / "features", centres[classes], rng)
    rows = [[p, c] for p, c in zip(inputs, classes)]
    train_csv = write_csv(tmp_path / "train.csv", ["path", "label"], rows[:80])
    val_csv = write_csv(tmp_path / "val.csv", ["path", "label"], rows[80:100])
    eval_csv = write_csv(tmp_path / "eval.csv", ["path", "label"], rows[100:])
    output = tmp_path / "metrics.json"
    argv = ["--features", str(tmp_path / "features"), "--train-labels", str(train_csv), "--val-labels", str(val_csv),
            "--eval-labels", str(eval_csv), "--problem-type", "single_label_classification", "--recipe", "marlin",
            "--learning-rate", "1e-2", "--lr-scheduler-kwargs", PLATEAU, "--stop-learning-rate", "1e-5",
            "--out", str(output)]  # fmt: skip
    assert linear_probe.main(argv) == 0
    assert "recipe marlin:" in capsys.readouterr().err
    report = json.loads(output.read_text())
    assert report["recipe"]["recipe"] == "marlin"
    assert report["recipe"]["description"].startswith("Adam, betas 0.5/0.9, lr 0.01, lr x")  # --learning-rate won
    hyper = report["hyperparameters"]
    assert hyper["standardize"] is False and hyper["zero_init"] is False and hyper["adam_beta1"] == 0.5
    assert hyper["learning_rate"] == 1e-2 and hyper["lr_scheduler_kwargs"] == json.loads(PLATEAU)
    assert "roc_auc_batch_mean" in report["validation"]
    # a 50% gain asked of every epoch: the lr drops 10x at each epoch short of it; 1e-5 comes long before 2000
    assert report["epochs_trained"] < 20 and report["best_epoch"] <= report["epochs_trained"]


def test_linear_probe_plateau_stops_at_the_floor_and_keeps_raw_features():
    rng = np.random.default_rng(1)
    x = rng.normal(size=(40, 6)) + 10.0
    y = (x[:, 0] > 10.0).astype(int)
    config = LinearProbeConfig(
        **{**RECIPES["marlin"].linear_probe, "epochs": 500, "lr_scheduler_kwargs": {"factor": 0.5, "patience": 0}}
    )
    probe, selection = train_linear_probe(x, y, "single_label_classification", 2, config)
    assert torch.all(probe.norm.mean == 0) and torch.all(probe.norm.std == 1)  # no standardization
    # patience 0: a halving at every epoch whose loss does not improve; 1e-4 reaches 1e-6 after 7 halvings
    assert 7 <= selection["epochs_trained"] < 500
    ours, _ = train_linear_probe(x, y, "single_label_classification", 2, LinearProbeConfig(epochs=3))
    assert not torch.all(ours.norm.std == 1)
