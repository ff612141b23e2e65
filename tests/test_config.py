"""cvae_seg.config: YAML configs with _base_ files, dotted overrides, errors that name the key."""

from pathlib import Path

import pytest

from cvae_seg.config import load_config
from cvae_seg.training import build_model

ROOT = Path(__file__).resolve().parents[1]


def test_config_errors_name_the_key(tmp_path):
    demo = ROOT / "configs" / "demo.yaml"
    with pytest.raises(
        ValueError,
        match=r"train\.max_step: unknown key \(did you mean max_steps\?\); valid keys: .*max_",
    ):
        load_config(demo, ["train.max_step=3"])
    with pytest.raises(ValueError, match=r"model\.objective: Input should be 'cnn', 'gdnn'"):
        load_config(demo, ["model.objective=vae"])
    with pytest.raises(ValueError, match=r"must look like key\.sub=value"):
        load_config(demo, ["train.max_steps"])
    with pytest.raises(FileNotFoundError, match=r"nothing\.yaml"):
        load_config(tmp_path / "nothing.yaml")
    child = tmp_path / "child.yaml"
    child.write_text("_base_: child.yaml\n")
    with pytest.raises(ValueError, match="includes itself"):
        load_config(child)
    child.write_text("_base_: missing.yaml\n")
    with pytest.raises(FileNotFoundError, match=r"missing\.yaml \(the _base_ of .*child\.yaml\)"):
        load_config(child)
    child.write_text(f"_base_: {tmp_path}\n")
    with pytest.raises(IsADirectoryError, match=r"the _base_ of .*child\.yaml\) is a folder"):
        load_config(child)
    with pytest.raises(TypeError, match=r"a list of 'key\.sub=value' strings.*\['train\.max"):
        load_config(demo, "train.max_steps=3")  # not read one character at a time


def test_config_base_files_merge():
    config = load_config(ROOT / "configs" / "lfw_hybrid.yaml")
    assert config.model.objective == "hybrid" and config.model.arch == "sohn2015"
    assert (
        config.data.dataset == "lfw"
        and config.data.noise == 0.4
        and config.train.max_steps == 10000
    )
    assert config.train.lr == 3e-4 and config.data.batch_size == 32 and config.model.alpha == 0.5
    assert load_config(ROOT / "configs" / "cub_cnn.yaml").train.max_steps == 16000


@pytest.mark.parametrize("arch", ["Unet", "mnist_mlp"])
def test_config_log_variance_bound_reaches_both_gaussian_nets(arch):
    """model.logvar_bound (the cap on the std of q and p) is not lost between config and nets."""
    base = ROOT / "configs" / ("demo.yaml" if arch == "Unet" else "mnist_q1_cvae.yaml")
    config = load_config(base, [f"model.arch={arch}", "model.logvar_bound=9"])
    model = build_model(config, 2)
    assert model.prior_net.logvar_bound == model.recognition_net.logvar_bound == 9


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            "model:\n  arch: Unet\n  arch: FPN\n",
            r"c\.yaml, line 3: duplicate key 'arch' \(first .* 2\)",
        ),
        (
            "model: {arch: Unet}\ntrain: {lr: 1}\nmodel: {arch: FPN}\n",
            r"line 3: duplicate key 'model'",
        ),
        ("", r"c\.yaml is empty; expected sections such as model, data and train"),
        ("# a comment alone\n", r"c\.yaml is empty"),
        ("model: [1,\n", r"c\.yaml, line 2: not valid YAML \(while parsing a flow node"),
        ("model:\n  arch: Unet\n\tx: 1\n", r"line 3: not valid YAML \(.*'\\t'"),
        ("- model\n", r"expected a mapping of sections at the top level"),
    ],
)
def test_config_files_that_would_run_wrongly_are_refused_naming_the_line(text, message, tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text(text)
    with pytest.raises(ValueError, match=message):
        load_config(path)


def test_yaml_merge_keys_and_anchors_still_load(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("<<: {train: {seed: 3}}\nmodel: &m {arch: FPN}\n")
    assert load_config(path).model.arch == "FPN" and load_config(path).train.seed == 3


def test_a_data_setting_the_data_set_never_reads_is_named_in_a_warning():
    with pytest.warns(UserWarning, match="data.dataset='lfw' does not use ") as caught:
        load_config(None, ["data.dataset=lfw", "data.cub_margin=0.3", "data.shapes_train=9"])
    (message,) = [str(w.message) for w in caught if "does not use" in str(w.message)]
    assert "data.cub_margin=0.3" in message and "data.shapes_train=9" in message


def test_no_shipped_config_sets_what_its_data_set_ignores(recwarn):
    for path in sorted((ROOT / "configs").glob("*.yaml")):
        load_config(path)
    assert not [str(w.message) for w in recwarn if "does not use" in str(w.message)]


def test_a_probunet_config_without_a_latent_size_takes_its_papers_not_the_cvaes():
    from cvae_seg import ProbabilisticUNet
    from cvae_seg.config import validate_config

    config = load_config(None, ["model.head=probunet", "model.encoder_name=tu-test_resnet"])
    assert config.model.latent_channels == 6 and load_config(None).model.latent_channels == 32
    assert validate_config(config.model_dump(), "saved").model.latent_channels == 6
    model = build_model(config, num_classes=2)
    assert isinstance(model, ProbabilisticUNet) and model.head_config["latent_channels"] == 6
    # a size the config gives is kept, whatever the head
    chosen = load_config(None, ["model.head=probunet", "model.latent_channels=3"])
    assert chosen.model.latent_channels == 3
    chosen.model.head = "cvae"
    assert chosen.model.latent_channels == 3
    # a default follows the head it is the default of, both ways
    config.model.head = "cvae"
    assert config.model.latent_channels == 32


def test_model_copy_checks_its_update_like_an_assignment():
    import pydantic

    config = load_config(None)
    copied = config.model.model_copy(update={"head": "probunet"})
    assert copied.latent_channels == 6 and config.model.head == "cvae"  # the original kept
    nested = config.model_copy(update={"model": {"head": "ssn", "rank": 3}})
    assert (nested.model.head, nested.model.rank) == ("ssn", 3)
    with pytest.raises(pydantic.ValidationError, match="rank"):
        config.model.model_copy(update={"rank": -1})
    with pytest.raises(pydantic.ValidationError, match="rnak"):
        config.model.model_copy(update={"rnak": 3})
