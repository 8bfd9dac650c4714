"""A CLIP trained with SigLIP's loss (issue 25): the config, the logit_bias, loading and saving."""
import dataclasses
import json
import math

import numpy as np
import pytest

from miniclip.checkpoint import model_from_checkpoint, save_checkpoint
from miniclip.config import CLIPConfig, get_config
from miniclip.model import CLIP, config_from_state_dict
from miniclip.optim import clamp_logit_scale, param_groups_for_weight_decay
from miniclip.pretrained import CheckpointError, check_supported, export_hf, load, write_safetensors
from test_load_export import ODD, SMALL_OPENCLIP, inputs, openclip_folder, outputs, scrambled

SIGLIP = dataclasses.replace(get_config("micro"), loss="siglip")


def test_each_loss_has_its_initial_temperature_and_bias():
    clip, siglip = CLIP("micro"), CLIP(SIGLIP)
    assert clip.logit_scale.item() == pytest.approx(math.log(1 / 0.07))
    assert not hasattr(clip, "logit_bias") and "logit_bias" not in clip.state_dict()
    assert siglip.logit_scale.item() == pytest.approx(math.log(10))
    assert siglip.logit_bias.item() == -10 and siglip.state_dict()["logit_bias"].shape == ()
    custom = CLIP(dataclasses.replace(SIGLIP, init_logit_scale=1.5, init_logit_bias=-3.0))
    assert (custom.logit_scale.item(), custom.logit_bias.item()) == (1.5, -3.0)


def test_the_logits_carry_the_bias():
    model = CLIP(SIGLIP)
    model.logit_bias.data[...] = -2.5
    images, ids = inputs(SIGLIP)
    logits_per_image, logits_per_text = model(images, ids)
    model.logit_bias.data[...] = 0
    unbiased, _ = model(images, ids)
    np.testing.assert_allclose(logits_per_image.data, unbiased.data - 2.5, rtol=1e-6, atol=1e-6)
    np.testing.assert_array_equal(logits_per_text.data, logits_per_image.data.T)


@pytest.mark.parametrize("fields, message", [
    (dict(loss="sigmoid"), "CLIPConfig.loss = 'sigmoid'"),
    (dict(init_logit_bias=-10.0), "only loss 'siglip' has a logit bias"),
    (dict(init_logit_scale=5.0), r"in \[0, ln 100\]"),
    (dict(init_logit_scale=-0.1), r"in \[0, ln 100\]"),
    (dict(init_logit_scale=float("nan")), "finite number"),
    (dict(loss="siglip", init_logit_bias="-10"), "finite number"),
])
def test_bad_loss_fields_are_refused(fields, message):
    with pytest.raises(ValueError, match=message):
        dataclasses.replace(get_config("micro"), **fields)


def test_defaults_are_stored_as_none_and_round_trip_through_json():
    assert dataclasses.replace(SIGLIP, init_logit_scale=math.log(10), init_logit_bias=-10) == SIGLIP
    custom = dataclasses.replace(SIGLIP, init_logit_scale=-math.log(0.3), init_logit_bias=-4)
    again = CLIPConfig(**json.loads(json.dumps(dataclasses.asdict(custom))))
    assert again == custom and again.init_logit_bias == -4.0
    old = {k: v for k, v in dataclasses.asdict(get_config("micro")).items()      # a config saved
           if k not in ("loss", "init_logit_scale", "init_logit_bias")}         # before issue 25
    assert CLIPConfig(**old) == get_config("micro") and CLIPConfig(**old).loss == "clip"


def test_a_checkpoint_round_trips_the_siglip_config(tmp_path):
    config = dataclasses.replace(SIGLIP, init_logit_scale=2.0, init_logit_bias=-5.0)
    model = CLIP(config, seed=3)
    model.logit_bias.data[...] = -4.25
    save_checkpoint(tmp_path / "c.npz", model, meta={"model": dataclasses.asdict(config)})
    loaded, _, _ = model_from_checkpoint(tmp_path / "c.npz", device="cpu")
    assert loaded.config == config and loaded.logit_bias.item() == -4.25


def test_an_old_checkpoint_without_the_fields_loads_as_clip(tmp_path):
    model = CLIP("micro", seed=3)
    old = {k: v for k, v in dataclasses.asdict(model.config).items()
           if k not in ("loss", "init_logit_scale", "init_logit_bias")}
    save_checkpoint(tmp_path / "c.npz", model, meta={"model": old})
    loaded, _, _ = model_from_checkpoint(tmp_path / "c.npz", device="cpu")
    assert loaded.config.loss == "clip" and not hasattr(loaded, "logit_bias")


def test_a_state_dict_with_logit_bias_loads_as_a_siglip_clip(tmp_path):
    """OpenCLIP's name for SigLIP's bias: such weights were refused before issue 25."""
    trained = scrambled(dataclasses.replace(ODD, loss="siglip"))
    trained.logit_bias.data[...] = -7.5
    state = {k: v.data for k, v in trained.state_dict().items()}
    check_supported(state)                                        # no longer refused
    assert config_from_state_dict(state).loss == "siglip"
    write_safetensors(tmp_path / "w.safetensors", state)
    model, _ = load(tmp_path / "w.safetensors", device="cpu", config=ODD)   # a CLIP config: made SigLIP
    assert model.config.loss == "siglip" and model.logit_bias.item() == -7.5
    images, ids = inputs(ODD)
    np.testing.assert_array_equal(outputs(model, images, ids)[2], outputs(trained, images, ids)[2])
    with pytest.warns(UserWarning, match="without a config"):
        inferred, _ = load(tmp_path / "w.safetensors", device="cpu")
    assert inferred.config.loss == "siglip" and inferred.logit_bias.item() == -7.5


def test_an_openclip_folder_with_init_logit_bias_is_a_siglip_model(tmp_path):
    config = dataclasses.replace(ODD, vision_heads=2, transformer_heads=2, vision_mlp_width=80,
                                 transformer_mlp_width=None, layer_norm_eps=1e-5, loss="siglip",
                                 init_logit_bias=-5.0)
    model = scrambled(config)
    folder = openclip_folder(tmp_path, model, {**SMALL_OPENCLIP, "init_logit_bias": -5})
    loaded, _ = load(folder, device="cpu")
    assert loaded.config == config and loaded.logit_bias.item() == model.logit_bias.item()


def test_export_hf_refuses_a_siglip_model_in_one_line(tmp_path):
    with pytest.raises(CheckpointError, match="no logit bias"):
        export_hf(CLIP(dataclasses.replace(ODD, loss="siglip")), tmp_path / "hf")


def test_weight_decay_leaves_out_the_bias_and_a_frozen_temperature():
    model = CLIP(SIGLIP)
    decay, no_decay = param_groups_for_weight_decay(model, 0.1)
    assert {"logit_scale", "logit_bias"} <= set(no_decay["names"]) and "logit_bias" not in decay["names"]
    model.logit_scale.requires_grad = False
    decay, no_decay = param_groups_for_weight_decay(model, 0.1)
    assert "logit_scale" not in decay["names"] + no_decay["names"]
    assert all(p is not model.logit_scale for p in decay["params"] + no_decay["params"])


def test_the_scale_is_clamped_to_ln_100_for_either_loss():
    for config in (get_config("micro"), SIGLIP):
        model = CLIP(config)
        model.logit_scale.data[...] = 7.0
        clamp_logit_scale(model)
        assert model.logit_scale.item() == pytest.approx(math.log(100))
