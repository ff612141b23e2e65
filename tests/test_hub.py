"""save_pretrained / from_pretrained: round trips and errors that name the file."""

import json

import pytest
import torch
from conftest import TEST_ENCODER

import cvae_seg
from cvae_seg.models.mnist import QuadrantCVAE


def _unet(objective="cvae", **kwargs):
    return cvae_seg.create_model(
        "Unet", encoder_name=TEST_ENCODER, classes=3, objective=objective, **kwargs
    )


@pytest.mark.parametrize("objective", ["cnn", "hybrid"])
def test_round_trip_gives_identical_predictions_and_samples(tmp_path, objective):
    model = _unet(objective, latent_channels=8, scale_weights=(0.5, 1.0, 1.0))
    with torch.no_grad():  # move the weights away from their initialisation
        for parameter in model.parameters():
            parameter.add_(0.01 * torch.randn_like(parameter))
    model.save_pretrained(tmp_path, classes=["a", "b", "c"], metrics={"pixel_accuracy": 50.0})
    assert {p.name for p in tmp_path.iterdir()} == {"config.json", "model.safetensors", "README.md"}
    loaded = cvae_seg.from_pretrained(tmp_path)
    assert not loaded.training and loaded.scale_weights == (0.5, 1.0, 1.0)
    x = torch.randn(2, 3, 64, 64)
    torch.testing.assert_close(loaded.predict(x), model.predict(x))
    torch.manual_seed(4)
    expected = model.sample(x, 3)
    torch.manual_seed(4)
    torch.testing.assert_close(loaded.sample(x, 3), expected)
    assert "pixel_accuracy: 50.0" in (tmp_path / "README.md").read_text()


def test_mnist_models_round_trip(tmp_path):
    model = QuadrantCVAE(observed=2, hidden=(16,), latent_features=4)
    assert model.config["arch"] == "mnist_mlp"
    model.save_pretrained(tmp_path)
    loaded = cvae_seg.from_pretrained(tmp_path)
    x = torch.rand(3, 1, 28, 28)
    torch.testing.assert_close(loaded.predict(x), model.predict(x))


def test_errors_name_the_file_and_the_mismatch(tmp_path):
    _unet().save_pretrained(tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())

    config["kwargs"]["latent_channels"] = 16  # another latent size than the weights
    (tmp_path / "config.json").write_text(json.dumps(config))
    with pytest.raises(ValueError, match=r"model\.safetensors does not fit the model") as error:
        cvae_seg.from_pretrained(tmp_path)
    # a few named tensors, not torch's list of every mismatch
    assert "tensor(s) differ in shape (prior_net" in str(error.value)
    assert len(str(error.value)) < 600

    config["arch"] = "FPN"  # another architecture: smp refuses the Unet's arguments
    (tmp_path / "config.json").write_text(json.dumps(config))
    with pytest.raises(ValueError, match=r"config\.json: model 'FPN' could not be built"):
        cvae_seg.from_pretrained(tmp_path)

    config["format_version"] = 99  # a file from another version
    (tmp_path / "config.json").write_text(json.dumps(config))
    with pytest.raises(ValueError, match=r"config\.json has format_version 99"):
        cvae_seg.from_pretrained(tmp_path)

    config["format_version"], config["arch"] = 2, "Unet"
    config["kwargs"]["latent_channels"] = 32
    (tmp_path / "config.json").write_text(json.dumps(config))
    weights = (tmp_path / "model.safetensors").read_bytes()
    (tmp_path / "model.safetensors").write_bytes(weights[: len(weights) // 2])
    with pytest.raises(ValueError, match=r"model\.safetensors could not be read"):
        cvae_seg.from_pretrained(tmp_path)

    (tmp_path / "model.safetensors").unlink()
    with pytest.raises(FileNotFoundError, match=r"model\.safetensors is missing"):
        cvae_seg.from_pretrained(tmp_path)


@pytest.mark.parametrize(
    "text, names",
    [
        ("[]", "holds a list; expected a JSON object"),
        (b"\xe9t\xe9", "is not valid JSON"),  # not UTF-8
    ],
)
def test_a_damaged_config_json_is_named(tmp_path, text, names):
    _unet().save_pretrained(tmp_path)
    path = tmp_path / "config.json"
    path.write_bytes(text if isinstance(text, bytes) else text.encode())
    with pytest.raises(ValueError, match=rf"config\.json {names}"):
        cvae_seg.from_pretrained(tmp_path)


def test_save_refuses_what_json_cannot_hold_before_writing_anything(tmp_path):
    with pytest.raises(TypeError, match="plain JSON values"):
        _unet().save_pretrained(tmp_path / "m", metrics={"accuracy": torch.tensor(0.9)})
    assert not (tmp_path / "m").exists()  # no half-saved folder
    with pytest.raises(ValueError, match=r"classes has 2 names .* the model predicts 3"):
        _unet().save_pretrained(tmp_path / "m", classes=["a", "b"])
    (tmp_path / "taken").write_text("a file of the user's")
    with pytest.raises(NotADirectoryError, match=r"taken is a file; expected a folder"):
        _unet().save_pretrained(tmp_path / "taken")
    assert (tmp_path / "taken").read_text() == "a file of the user's"


def test_map_location_is_checked_as_a_device(tmp_path):
    _unet().save_pretrained(tmp_path)
    with pytest.raises(ValueError, match="map_location 'gpu' is not a device"):
        cvae_seg.from_pretrained(tmp_path, map_location="gpu")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="map_location 'cuda': CUDA is not available"):
            cvae_seg.from_pretrained(tmp_path, map_location="cuda")


def _assert_same_predictions_and_samples(model, loaded, x):
    torch.testing.assert_close(loaded.predict(x), model.predict(x))
    torch.manual_seed(4)
    expected = model.sample(x, 3)
    torch.manual_seed(4)
    torch.testing.assert_close(loaded.sample(x, 3), expected)


@pytest.mark.parametrize("arch", ["FPN", "Unet"])
def test_a_model_wrapped_by_hand_round_trips(tmp_path, arch):
    import segmentation_models_pytorch as smp

    backbone = smp.create_model(arch, encoder_name=TEST_ENCODER, encoder_weights=None, classes=3)
    model = cvae_seg.CVAE(backbone, objective="hybrid", latent_channels=4)
    model.save_pretrained(tmp_path)
    loaded = cvae_seg.from_pretrained(tmp_path)
    assert type(loaded.backbone) is type(backbone)
    assert json.dumps(loaded.config) == json.dumps(model.config)
    _assert_same_predictions_and_samples(model, loaded, torch.randn(2, 3, 64, 64))


def test_version_1_files_still_load(tmp_path):
    model = _unet("gsnn", latent_channels=4)
    model.save_pretrained(tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    kwargs = {"arch": config.pop("arch"), **config.pop("kwargs")}  # the 0.x layout
    config.update(format_version=1, builder="create_model", kwargs=kwargs)
    (tmp_path / "config.json").write_text(json.dumps(config))
    _assert_same_predictions_and_samples(model, cvae_seg.from_pretrained(tmp_path),
                                         torch.randn(2, 3, 64, 64))  # fmt: skip


def test_a_training_checkpoint_given_to_from_pretrained_is_sent_to_load_trained(tmp_path):
    checkpoint = tmp_path / "best.pt"
    checkpoint.write_bytes(b"")
    with pytest.raises(ValueError, match=r"best.pt is a file;.*training.load_trained"):
        cvae_seg.from_pretrained(checkpoint)
    (tmp_path / "config.json").write_text("{}")
    with pytest.raises(ValueError, match=r"config.json is a file;.*give its folder"):
        cvae_seg.from_pretrained(tmp_path / "config.json")


def test_models_that_cannot_be_rebuilt_are_refused(tmp_path):
    from torch import nn

    class Plain(nn.Module):  # has a segmentation_head but no registered class or config
        def __init__(self):
            super().__init__()
            self.segmentation_head = nn.Conv2d(3, 3, 1)

        def forward(self, x):
            return self.segmentation_head(x)

    model = cvae_seg.CVAE(Plain(), objective="cnn", probe_size=32)
    with pytest.raises(ValueError, match=r"backbone Plain cannot be rebuilt.*register_model"):
        model.save_pretrained(tmp_path)
    assert not (tmp_path / "model.safetensors").exists()


def test_evaluating_a_folder_saved_without_its_training_config_says_how(tmp_path):
    from cvae_seg.training.loading import load_trained

    _unet().save_pretrained(tmp_path)
    with pytest.raises(ValueError, match=r"no training_config .* save_pretrained\(\.\.\., train"):
        load_trained(tmp_path, torch.device("cpu"))


def test_a_config_json_whose_class_names_do_not_fit_the_model_is_refused(tmp_path):
    _unet().save_pretrained(tmp_path, classes=["a", "b", "c"])
    saved = json.loads((tmp_path / "config.json").read_text())
    (tmp_path / "config.json").write_text(json.dumps({**saved, "classes": ["a", "b"]}))
    with pytest.raises(ValueError, match=r"config\.json: classes has 2 names .* predicts 3"):
        cvae_seg.from_pretrained(tmp_path)
