import pytest
import torch

from conftest import REFERENCE_VIT_BASE
from marlin_transformers import MARLIN_VARIANTS, MarlinConfig, MarlinModel

# Encoder parameters in the authors' model zoo (MODEL_ZOO.md), which count the stored sin-cos table.
ZOO_ENCODER_PARAMETERS = {"small": 22.48e6, "base": 87.43e6, "large": 305.47e6}


@pytest.mark.parametrize("variant", sorted(MARLIN_VARIANTS))
def test_variant_encoder_parameter_counts_match_model_zoo(variant):
    config = MarlinConfig.from_variant(variant)
    with torch.device("meta"):
        model = MarlinModel(config)
    learned = sum(p.numel() for p in model.parameters())
    table = model.embeddings.position_embeddings.numel()  # a fixed buffer here, a frozen Parameter there
    assert round((learned + table) / 1e6, 2) == pytest.approx(ZOO_ENCODER_PARAMETERS[variant] / 1e6, abs=0.005)


def test_released_variant_shapes():
    small, base, large = (MarlinConfig.from_variant(v) for v in ("small", "base", "large"))
    assert (small.hidden_size, small.num_hidden_layers, small.num_attention_heads) == (384, 12, 6)
    small_decoder = (small.decoder_hidden_size, small.decoder_num_hidden_layers, small.decoder_num_attention_heads)
    assert small_decoder == (192, 4, 3)
    assert (base.hidden_size, base.decoder_hidden_size, base.decoder_num_attention_heads) == (768, 384, 6)
    assert (large.hidden_size, large.num_hidden_layers, large.num_attention_heads) == (1024, 24, 16)
    large_decoder = (large.decoder_hidden_size, large.decoder_num_hidden_layers, large.decoder_num_attention_heads)
    assert large_decoder == (512, 12, 8)
    for config in (small, base, large):
        assert config.intermediate_size == 4 * config.hidden_size
        assert config.decoder_intermediate_size == 4 * config.decoder_hidden_size
        assert config.discriminator_hidden_size == 4 * config.decoder_hidden_size
        assert (config.image_size, config.patch_size, config.num_frames, config.tubelet_size) == (224, 16, 16, 2)
        assert config.num_patches == 1568 and config.qkv_bias and config.layer_norm_eps == 1e-5
        assert config.mask_ratio == 0.9 and config.adv_weight == 0.01


def test_authors_field_names_are_recognized():
    small = dict(encoder_embed_dim=384, encoder_num_heads=6, decoder_embed_dim=192, decoder_num_heads=3)
    config = MarlinConfig(**{**REFERENCE_VIT_BASE, **small}, as_feature_extractor=True)
    assert config.to_diff_dict() == MarlinConfig.from_variant("small").to_diff_dict()
    assert not hasattr(config, "encoder_embed_dim") and not hasattr(config, "img_size")


def test_unsupported_reference_options_fail_loudly():
    with pytest.raises(ValueError, match="init_values"):
        MarlinConfig(init_values=0.1)
    with pytest.raises(ValueError, match="Unknown MARLIN variant"):
        MarlinConfig.from_variant("huge")


def test_config_round_trip(tmp_path):
    config = MarlinConfig.from_variant("large", mask_strategy="tube")
    config.save_pretrained(tmp_path)
    assert MarlinConfig.from_pretrained(tmp_path).to_dict() == config.to_dict()
