"""transformers' own common tests (`ModelTesterMixin`, `ConfigTester`), run on MARLIN the way an in-tree model's test
runs them, with a tiny config (VideoMAE's test is the pattern: same inputs, same kind of skips).

The mixins ship in transformers' source distribution, not its wheel. `tests/fetch_transformers_tests.py` (run by
`.ci/run`) unpacks the installed release's `tests/` into a cache outside this repository; nothing of it is copied
here. That folder imports three modules the sdist leaves out; they are stood in for below, each with what it means:
- `exporters.test_export.ExportTesterMixin` (the base of `ModelTesterMixin`): an empty mixin, so transformers'
  exporter tests (ONNX, ExecuTorch, ...) do not run here; `torch.export` and `torch.compile` of `MarlinModel` are
  tested in `test_modeling.py`.
- `generation.test_utils.GenerationTesterMixin`: an empty class; MARLIN does not generate, and the suite only asks
  whether a tester inherits it.
- `utils.test_configuration_utils.config_common_kwargs`: `PreTrainedConfig` arguments set to non-default values,
  which `ConfigTester.check_config_arguments_init` checks a config keeps.

Without the fetched folder the module is skipped with that instruction; `.ci/run` sets
`MARLIN_REQUIRE_TRANSFORMERS_SUITE` so that in CI a missing folder is a failure, not a skip.
"""

import copy
import importlib
import sys
import types
import unittest
from unittest import mock

import torch
from transformers import MODEL_FOR_VIDEO_CLASSIFICATION_MAPPING
from transformers.models.auto import get_values, modeling_auto
from transformers.testing_utils import torch_device

from conftest import require_optional
from fetch_transformers_tests import transformers_tests_dir
from marlin_transformers import MarlinConfig, MarlinForPreTraining, MarlinForVideoClassification, MarlinModel

SUITE_DIR = transformers_tests_dir()
PACKAGE = "transformers_release_tests"


def _load_suite():
    """Import the release's `test_modeling_common` and `test_configuration_common` as a package, with the stand-ins."""
    if PACKAGE not in sys.modules:
        _register_package()
    return (
        importlib.import_module(f"{PACKAGE}.test_modeling_common"),
        importlib.import_module(f"{PACKAGE}.test_configuration_common"),
    )


def _register_package() -> None:
    """The fetched `tests/` folder as package `PACKAGE`, with stand-ins for the modules the sdist leaves out."""
    package = types.ModuleType(PACKAGE)
    package.__path__ = [str(SUITE_DIR)]
    sys.modules[PACKAGE] = package

    def stand_in(name: str, **attributes) -> None:
        parts = name.split(".")
        for depth in range(1, len(parts) + 1):
            full = ".".join([PACKAGE, *parts[:depth]])
            if full not in sys.modules:
                module = types.ModuleType(full)
                module.__path__ = []
                sys.modules[full] = module
        vars(sys.modules[".".join([PACKAGE, *parts])]).update(attributes)

    stand_in("exporters.test_export", ExportTesterMixin=type("ExportTesterMixin", (), {}))
    stand_in("generation.test_utils", GenerationTesterMixin=type("GenerationTesterMixin", (), {}))
    stand_in(
        "utils.test_configuration_utils",
        config_common_kwargs={
            "return_dict": False,
            "output_hidden_states": True,
            "output_attentions": True,
            "dtype": "float16",
            "chunk_size_feed_forward": 5,
            "architectures": ["MarlinModel"],
            "id2label": {0: "neutral", 1: "happy"},
            "label2id": {"neutral": 0, "happy": 1},
            "problem_type": "single_label_classification",
        },
    )
    # `test_configuration_common` imports transformers "directly" from its own folder's `__init__.py`, which the
    # sdist's `tests/` does not have; that import hands back the installed package. Give it the file it reads.
    init = SUITE_DIR / "__init__.py"
    if not init.exists():
        init.write_text("")


missing = [] if (SUITE_DIR / "test_modeling_common.py").is_file() else [f"transformers' common tests in {SUITE_DIR}"]
install = "python tests/fetch_transformers_tests.py"
require_optional(missing, install, "MARLIN_REQUIRE_TRANSFORMERS_SUITE", allow_module_level=True)

test_modeling_common, test_configuration_common = _load_suite()
ModelTesterMixin = test_modeling_common.ModelTesterMixin
floats_tensor = test_modeling_common.floats_tensor
ids_tensor = test_modeling_common.ids_tensor
ConfigTester = test_configuration_common.ConfigTester


class MarlinModelTester:
    """Tiny MARLIN: 4 frames of 10x10 pixels in 2x5x5 tubelets (8 tokens), 2 encoder layers, 1 decoder layer."""

    def __init__(self, parent, batch_size=3, num_labels=5, mask_ratio=0.75):
        self.parent = parent
        self.batch_size = batch_size
        self.num_labels = num_labels
        self.image_size, self.patch_size, self.num_frames, self.tubelet_size = 10, 5, 4, 2
        self.num_channels = 3
        self.hidden_size, self.num_hidden_layers, self.num_attention_heads = 32, 2, 4
        self.seq_length = (self.num_frames // self.tubelet_size) * (self.image_size // self.patch_size) ** 2
        self.num_masks = int(mask_ratio * self.seq_length)
        self.is_training = True

    def get_config(self) -> MarlinConfig:
        return MarlinConfig(
            image_size=self.image_size,
            patch_size=self.patch_size,
            num_channels=self.num_channels,
            num_frames=self.num_frames,
            tubelet_size=self.tubelet_size,
            hidden_size=self.hidden_size,
            num_hidden_layers=self.num_hidden_layers,
            num_attention_heads=self.num_attention_heads,
            intermediate_size=37,
            decoder_hidden_size=16,
            decoder_num_hidden_layers=1,
            decoder_num_attention_heads=2,
            decoder_intermediate_size=24,
            discriminator_hidden_size=20,
            num_labels=self.num_labels,
        )

    def prepare_config_and_inputs(self):
        pixel_values_videos = floats_tensor(
            [self.batch_size, self.num_frames, self.num_channels, self.image_size, self.image_size]
        )
        labels = ids_tensor([self.batch_size], self.num_labels)
        return self.get_config(), pixel_values_videos, labels

    def prepare_config_and_inputs_for_common(self):
        config, pixel_values_videos, _ = self.prepare_config_and_inputs()
        return config, {"pixel_values_videos": pixel_values_videos}

    def bool_masked_pos(self, batch_size: int) -> torch.BoolTensor:
        """The same mask for every clip (MARLIN, like VideoMAE, needs one count of masked tokens per batch)."""
        mask = torch.zeros(self.seq_length, dtype=torch.bool)
        mask[: self.num_masks] = True
        return mask.expand(batch_size, -1).to(torch_device)


class MarlinModelTest(ModelTesterMixin, unittest.TestCase):
    all_model_classes = (MarlinModel, MarlinForPreTraining, MarlinForVideoClassification)
    additional_model_inputs = ["bool_masked_pos"]
    test_resize_embeddings = False  # tubelet embeddings: no vocabulary to resize

    @classmethod
    def setUpClass(cls):
        # An in-tree model is listed in the Auto name tables, which the suite reads to tell a base model (no loss)
        # from a head; MARLIN registers with the Auto classes at import instead, so list it for this class's tests.
        cls._listed = [
            mock.patch.dict(getattr(modeling_auto, table), {"marlin": name})
            for table, name in (
                ("MODEL_MAPPING_NAMES", "MarlinModel"),
                ("MODEL_FOR_PRETRAINING_MAPPING_NAMES", "MarlinForPreTraining"),
                ("MODEL_FOR_VIDEO_CLASSIFICATION_MAPPING_NAMES", "MarlinForVideoClassification"),
            )
        ]
        for listed in cls._listed:
            listed.start()

    @classmethod
    def tearDownClass(cls):
        for listed in cls._listed:
            listed.stop()

    def setUp(self):
        self.model_tester = MarlinModelTester(self)
        # A width with heads that divide it: MarlinConfig refuses a config no model can be built from.
        self.config_tester = ConfigTester(
            self, config_class=MarlinConfig, has_text_modality=False, hidden_size=32, num_attention_heads=2
        )

    def _prepare_for_class(self, inputs_dict, model_class, return_labels=False):
        inputs_dict = copy.deepcopy(inputs_dict)
        if model_class is MarlinForPreTraining:
            batch_size = inputs_dict["pixel_values_videos"].shape[0]
            inputs_dict["bool_masked_pos"] = self.model_tester.bool_masked_pos(batch_size)
        if return_labels and model_class in get_values(MODEL_FOR_VIDEO_CLASSIFICATION_MAPPING):
            batch_size = inputs_dict["pixel_values_videos"].shape[0]
            inputs_dict["labels"] = torch.zeros(batch_size, dtype=torch.long, device=torch_device)
        return inputs_dict

    def _sequence_length(self, model_class) -> int:
        tester = self.model_tester
        return tester.seq_length - tester.num_masks if model_class is MarlinForPreTraining else tester.seq_length

    def test_config(self):
        self.config_tester.run_common_tests()

    def test_model(self):
        config, pixel_values_videos, _ = self.model_tester.prepare_config_and_inputs()
        model = MarlinModel(config).to(torch_device).eval()
        with torch.no_grad():
            outputs = model(pixel_values_videos)
        tester = self.model_tester
        self.assertEqual(outputs.last_hidden_state.shape, (tester.batch_size, tester.seq_length, tester.hidden_size))
        self.assertEqual(outputs.pooler_output.shape, (tester.batch_size, tester.hidden_size))

    def test_for_pretraining(self):
        config, pixel_values_videos, _ = self.model_tester.prepare_config_and_inputs()
        model = MarlinForPreTraining(config).to(torch_device).eval()
        tester = self.model_tester
        with torch.no_grad():
            outputs = model(pixel_values_videos, tester.bool_masked_pos(tester.batch_size))
        patch_dim = tester.num_channels * tester.tubelet_size * tester.patch_size**2
        self.assertEqual(outputs.logits.shape, (tester.batch_size, tester.num_masks, patch_dim))

    def test_for_video_classification(self):
        config, pixel_values_videos, labels = self.model_tester.prepare_config_and_inputs()
        model = MarlinForVideoClassification(config).to(torch_device).eval()
        with torch.no_grad():
            outputs = model(pixel_values_videos, labels=labels)
        self.assertEqual(outputs.logits.shape, (self.model_tester.batch_size, self.model_tester.num_labels))
        self.assertTrue(torch.isfinite(outputs.loss))

    @unittest.skip(reason="MARLIN reads pixels through a Conv3d tubelet embedding: it takes no inputs_embeds")
    def test_inputs_embeds(self):
        pass

    @unittest.skip(reason="MARLIN reads pixels through a Conv3d tubelet embedding: it takes no inputs_embeds")
    def test_inputs_embeds_matches_input_ids(self):
        pass

    def test_model_get_set_embeddings(self):
        config, _ = self.model_tester.prepare_config_and_inputs_for_common()
        for model_class in self.all_model_classes:
            model = model_class(config)
            self.assertIsInstance(model.get_input_embeddings(), torch.nn.Module)
            self.assertIsNone(model.get_output_embeddings())

    def test_attention_outputs(self):
        # The common version expects `seq_length` tokens everywhere; pretraining sees only the visible ones.
        config, inputs_dict = self.model_tester.prepare_config_and_inputs_for_common()
        tester = self.model_tester
        for model_class in self.all_model_classes:
            seq_len = self._sequence_length(model_class)
            for attn_implementation in ("eager", "sdpa"):
                model = model_class(config).to(torch_device).eval()
                model.set_attn_implementation(attn_implementation)
                with torch.no_grad():
                    outputs = model(**self._prepare_for_class(inputs_dict, model_class), output_attentions=True)
                self.assertEqual(len(outputs.attentions), tester.num_hidden_layers)
                expected = [tester.batch_size, tester.num_attention_heads, seq_len, seq_len]
                self.assertEqual(list(outputs.attentions[0].shape), expected)
                torch.testing.assert_close(
                    outputs.attentions[0].sum(-1), torch.ones(tester.batch_size, tester.num_attention_heads, seq_len)
                )

    def test_hidden_states_output(self):
        config, inputs_dict = self.model_tester.prepare_config_and_inputs_for_common()
        tester = self.model_tester
        for model_class in self.all_model_classes:
            model = model_class(config).to(torch_device).eval()
            with torch.no_grad():
                outputs = model(**self._prepare_for_class(inputs_dict, model_class), output_hidden_states=True)
            self.assertEqual(len(outputs.hidden_states), tester.num_hidden_layers + 1)
            self.assertEqual(
                list(outputs.hidden_states[0].shape[-2:]), [self._sequence_length(model_class), tester.hidden_size]
            )
