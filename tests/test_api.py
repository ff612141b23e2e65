"""The 1.0 public API: the registry, the model's surface apart from the loss, the import graph."""

import ast
import os
import re
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import TEST_ENCODER
from torch import nn

import cvae_seg
from cvae_seg.models import SMP_ARCHITECTURES
from cvae_seg.models.mnist import QuadrantCVAE

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "cvae_seg"


def _unet(objective="cvae", **kwargs):
    return cvae_seg.create_model(
        "Unet", encoder_name=TEST_ENCODER, classes=3, objective=objective, **kwargs
    )


def _batch(batch=2, size=64):
    return torch.randn(batch, 3, size, size), torch.randint(0, 3, (batch, size, size))


# ---------------------------------------------------------------------------- the registry
def test_list_models_names_every_architecture_create_model_builds():
    names = cvae_seg.list_models()
    assert set(SMP_ARCHITECTURES) | {"sohn2015", "mnist_mlp"} <= set(names)
    assert isinstance(cvae_seg.create_model("unet", encoder_name=TEST_ENCODER), cvae_seg.CVAE)
    assert isinstance(cvae_seg.create_model("sohn2015", classes=3), cvae_seg.CVAE)
    mlp = cvae_seg.create_model("mnist_mlp", observed=2, mlp_hidden=(8,), latent_channels=2)
    assert isinstance(mlp, cvae_seg.QuadrantCVAE)
    with pytest.raises(ValueError, match=r"unknown model 'Unett'; expected one of .*Unet"):
        cvae_seg.create_model("Unett")


class _TinyNet(nn.Module):
    """A backbone of our own, with smp's shape and its habit of keeping its arguments."""

    def __init__(self, in_channels: int = 3, classes: int = 2, width: int = 4) -> None:
        super().__init__()
        self.config = {"in_channels": in_channels, "classes": classes, "width": width}
        self.decoder = nn.Conv2d(in_channels, width, 3, padding=1)
        self.segmentation_head = nn.Conv2d(width, classes, 1)

    def forward(self, x):
        return self.segmentation_head(torch.relu(self.decoder(x)))


@cvae_seg.register_model("_TinyNet")
def _tiny_net(in_channels=3, classes=2, width=4, objective="cvae", **heads):
    return cvae_seg.CVAE(_TinyNet(in_channels, classes, width), objective=objective, **heads)


def test_register_model_adds_a_builder_that_saves_and_reloads(tmp_path):
    assert "_TinyNet" in cvae_seg.list_models()
    model = cvae_seg.create_model("_tinynet", classes=3, width=6, latent_channels=4)
    assert model.config["arch"] == "_TinyNet" and model.config["width"] == 6
    model.save_pretrained(tmp_path)
    loaded = cvae_seg.from_pretrained(tmp_path)
    x = torch.randn(2, 3, 32, 32)
    torch.testing.assert_close(loaded.predict(x), model.predict(x))
    with pytest.raises(ValueError, match="registered already"):
        cvae_seg.register_model("_TinyNet")(lambda **kwargs: None)


class _PlainNet(nn.Module):
    """A backbone that keeps no record of its arguments, as most hand-written nets."""

    def __init__(self, classes: int = 2, width: int = 4) -> None:
        super().__init__()
        self.decoder = nn.Conv2d(3, width, 3, padding=1)
        self.segmentation_head = nn.Conv2d(width, classes, 1)

    def forward(self, x):
        return self.segmentation_head(torch.relu(self.decoder(x)))


@cvae_seg.register_model("_plain_cvae")
def _plain_cvae(classes=2, width=4, **heads):
    return cvae_seg.CVAE(_PlainNet(classes, width), **heads)


def test_a_registered_builder_saves_a_backbone_that_keeps_no_config(tmp_path):
    model = cvae_seg.create_model("_PLAIN_CVAE", classes=3, width=5, latent_channels=2)
    assert model.config == {"arch": "_plain_cvae", "classes": 3, "width": 5, "latent_channels": 2}
    loaded = cvae_seg.from_pretrained(model.save_pretrained(tmp_path))
    x = torch.randn(2, 3, 32, 32)
    torch.testing.assert_close(loaded.predict(x), model.predict(x))
    # wrapped by hand, the same backbone has no recipe to be rebuilt from: refused, with the way
    with pytest.raises(ValueError, match=r"cannot be rebuilt.*cvae_seg.create_model"):
        cvae_seg.CVAE(_PlainNet(3, 5)).save_pretrained(tmp_path / "by_hand")
    # nor has a backbone swapped in after create_model: the recipe would build the old one
    model.backbone = _PlainNet(3, 7)
    with pytest.raises(ValueError, match=r"cannot be rebuilt"):
        model.save_pretrained(tmp_path / "swapped")


_DOWNLOADS: list[bool] = []


@cvae_seg.register_model("_fetching_cvae", offline={"pretrained": False})
def _fetching_cvae(classes=2, pretrained=True, **heads):
    """A builder whose own switch would fetch weights (recorded here, nothing fetched)."""
    _DOWNLOADS.append(pretrained)
    return cvae_seg.CVAE(_PlainNet(classes), **heads)


def test_a_builders_own_download_switch_is_off_when_a_saved_model_is_loaded(tmp_path):
    model = cvae_seg.create_model("_fetching_cvae", classes=3)  # the builder's default: fetch
    assert model.config == {"arch": "_fetching_cvae", "classes": 3, "pretrained": False}
    _DOWNLOADS.clear()
    loaded = cvae_seg.from_pretrained(model.save_pretrained(tmp_path))
    assert _DOWNLOADS == [False]  # rebuilt without fetching; the saved weights replace them
    x = torch.randn(2, 3, 16, 16)
    torch.testing.assert_close(loaded.predict(x), model.predict(x))
    assert cvae_seg.registry.offline_arguments("_PLAIN_CVAE") == {}


def test_an_offline_switch_the_builder_does_not_take_is_refused():
    with pytest.raises(ValueError, match=r"offline=.*\['pretrained'\].*does not take"):
        cvae_seg.register_model("_no_switch", offline={"pretrained": False})(lambda classes=2: None)
    assert "_no_switch" not in cvae_seg.list_models()
    with pytest.raises(TypeError, match=r"offline must map .*got list \['pretrained'\]"):
        cvae_seg.register_model("_no_switch", offline=["pretrained"])


def test_offline_switches_without_a_name_and_on_registering_again():
    @cvae_seg.register_model(offline={"pretrained": False})
    def _unnamed_fetching(classes=2, pretrained=True):
        return cvae_seg.CVAE(_PlainNet(classes))

    assert cvae_seg.registry.offline_arguments("_unnamed_fetching") == {"pretrained": False}
    cvae_seg.register_model("_unnamed_fetching")(_unnamed_fetching)  # again, no offline: kept
    assert cvae_seg.registry.offline_arguments("_unnamed_fetching") == {"pretrained": False}


def test_arguments_json_cannot_hold_are_named_as_the_models_when_saving(tmp_path):
    model = cvae_seg.create_model("_plain_cvae", classes=3, width=np.int64(5))
    with pytest.raises(TypeError, match=r"arguments model '_plain_cvae' was built with"):
        model.save_pretrained(tmp_path)
    assert not (tmp_path / "model.safetensors").exists()


def test_bad_head_arguments_are_refused_at_construction():
    with pytest.raises(ValueError, match="latent_channels must be a positive integer"):
        _unet(latent_channels=0)
    with pytest.raises(TypeError, match=r"unexpected argument.*latent_chanels"):
        cvae_seg.create_model("sohn2015", latent_chanels=4)
    with pytest.raises(TypeError, match=r"sohn2015 is the paper's own network, with no smp enc"):
        cvae_seg.create_model("sohn2015", encoder_name="resnet18")  # not the head's to refuse
    with pytest.raises(TypeError, match=r"'latent_channel' \(did you mean latent_channels"):
        cvae_seg.create_model("Unet", encoder_name=TEST_ENCODER, latent_channel=4)  # timm's
    # smp drops arguments it does not name for its own encoders: refused before building
    with pytest.raises(TypeError, match=r"'objectve' \(did you mean objective.*'resnet18'"):
        cvae_seg.create_model("Unet", encoder_name="resnet18", objectve="cnn")
    with pytest.raises(TypeError, match=r"'latent_channel' \(did you mean latent_channels"):
        cvae_seg.create_backbone("FPN", encoder_name="resnet18", latent_channel=4)
    with pytest.warns(DeprecationWarning):  # a deprecated name smp still takes goes through
        backbone = cvae_seg.create_backbone(
            "Unet", encoder_name="resnet18", decoder_use_batchnorm=False, decoder_channels=[8] * 5
        )
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in backbone.decoder.modules())
    with pytest.raises(ValueError, match=r"scale_weights .* not all zero"):
        _unet(scale_weights=(0, 0, 0))  # no scale scored: nothing would train
    with pytest.raises(ValueError, match="gaussian_kernel_sizes must be a non-empty list"):
        _unet(gaussian_kernel_sizes=(0, 3, 3))
    with pytest.raises(ValueError, match="logvar_bound must be a positive number"):
        _unet(logvar_bound=0)
    with pytest.raises(TypeError, match="ignore_index must be an integer or None"):
        _unet(ignore_index="255")


def test_a_backbone_that_ends_in_an_activation_is_refused():
    """Probabilities read as logits would train and score another model without an error."""
    import segmentation_models_pytorch as smp

    backbone = smp.Unet(TEST_ENCODER, encoder_weights=None, classes=3, activation="softmax2d")
    with pytest.raises(ValueError, match=r"ends in Softmax.*activation=None"):
        cvae_seg.CVAE(backbone)
    with pytest.raises(ValueError, match="activation=None"):
        cvae_seg.create_model("FPN", encoder_name=TEST_ENCODER, classes=3, activation="sigmoid")
    plain = smp.Unet(TEST_ENCODER, encoder_weights=None, classes=3, activation=None)
    assert cvae_seg.CVAE(plain).num_classes == 3


def test_an_ignore_index_that_is_a_class_is_named_in_a_warning():
    with pytest.warns(UserWarning, match="ignore_index=1 is one of the classes 0..2"):
        _unet(ignore_index=1)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        _unet(ignore_index=255)  # the usual label of unlabelled pixels: no warning


@pytest.mark.parametrize("count", [0, 2.5, "4", True])
def test_sample_counts_must_be_positive_integers(count):
    model = _unet()
    x, _ = _batch()
    with pytest.raises(ValueError, match=rf"num_samples must be a positive integer, got {count!r}"):
        model.sample(x, count)
    with pytest.raises(ValueError, match="num_samples must be a positive integer"):
        model.predict(x, method="average", num_samples=count)


# ---------------------------------------------------------------------------- the model API
def test_model_of_x_returns_logits_like_an_smp_model():
    model = _unet().eval()
    x, _ = _batch()
    logits = model(x)
    assert isinstance(logits, torch.Tensor) and logits.shape == (2, 3, 64, 64)
    torch.testing.assert_close(logits, model.predict(x))


def test_loss_is_apart_from_forward_and_the_old_spelling_warns():
    model = _unet("hybrid")
    x, y = _batch()
    torch.manual_seed(0)
    out = model.loss(x, y)
    assert out.loss.requires_grad and {"nll_posterior", "nll_prior", "kl", "loss"} <= set(out.terms)
    torch.manual_seed(0)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the mode="loss" form (for DDP) does not warn
        through_forward = model(x, y, mode="loss")
    torch.testing.assert_close(through_forward.loss, out.loss)
    torch.manual_seed(0)
    with pytest.warns(FutureWarning, match=r"model\.loss\(x, y\)"):
        old = model(x, y)
    torch.testing.assert_close(old.loss, out.loss)
    with pytest.raises(ValueError, match="mode must be"):
        model(x, y, mode="predict")


@pytest.mark.parametrize("objective", ["cvae", "hybrid"])
def test_prior_posterior_and_decode_are_public_building_blocks(objective):
    model = _unet(objective, latent_channels=4).eval()
    x, y = _batch()
    prior, posterior = model.prior(x), model.posterior(x, y)
    encoded = model.encode(x)
    for distribution in (prior, posterior):
        z = distribution.rsample((5,))
        assert z.shape == (5, 2, 4, 4, 4) and z.requires_grad
        assert distribution.log_prob(distribution.sample((5,))).shape == (5, 2, 4, 4, 4)
        logits = model.decode(encoded, z)
        assert logits.shape == (5, 2, 3, 64, 64)
        nll = model.reconstruction_nll(logits.flatten(0, 1), y.repeat(5, 1, 1))
        assert nll.shape == (10,) and bool((nll > 0).all())
    torch.testing.assert_close(model.decode(x, z), model.decode(encoded, z))  # x works too
    with pytest.raises(ValueError, match=r"z must be \(S, B, \*latent\) with B = 2"):
        model.decode(encoded, torch.randn(2, 4, 4, 4))


def test_building_blocks_refuse_what_the_objective_lacks():
    x, y = _batch()
    with pytest.raises(ValueError, match="trains no recognition net"):
        _unet("gsnn").posterior(x, y)
    with pytest.raises(ValueError, match="no latent variable"):
        _unet("cnn").prior(x)
    # a model outside smp (the MNIST net) says the same, not an AttributeError
    mnist = QuadrantCVAE(objective="gsnn", hidden=(8,), latent_features=2)
    pixels = torch.rand(1, 28 * 28)
    with pytest.raises(ValueError, match="objective 'gsnn', head 'cvae'"):
        mnist.posterior(pixels, pixels)


def test_user_input_errors_name_what_was_expected():
    model = _unet()
    x, y = _batch()
    with pytest.raises(ValueError, match=r"x must be \(B, 3, H, W\) images, got \(3, 64, 64\)"):
        model.loss(x[0], y)
    with pytest.raises(TypeError, match=r"floating-point image tensor, got torch\.uint8"):
        model(x.to(torch.uint8))
    with pytest.raises(TypeError, match=r"x is torch.float64 but the model's weights are"):
        model(x.double())
    with pytest.raises(ValueError, match=r"x holds NaN or infinite values"):
        model.sample(torch.where(x > 0, x, torch.nan), num_samples=2)
    bad = y.clone()
    bad[0, 0, 0] = 7
    with pytest.raises(ValueError, match=r"1 label\(s\) outside 0..2 .* e\.g\. 7.*classes=3"):
        model.loss(x, bad)


# ---------------------------------------------------------------------------- the code's shape
def _imports_of(path: Path) -> set[str]:
    """The cvae_seg modules that ``path`` imports, at the top or inside functions."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("cvae_seg"):
            found.add(node.module)
            found |= {f"{node.module}.{a.name}" for a in node.names}
        elif isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.startswith("cvae_seg")}
    return found


def _module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def test_the_package_import_graph_has_no_cycle():
    modules = {_module_name(p): p for p in PACKAGE.rglob("*.py")}
    graph = {}
    for name, path in modules.items():
        # "from cvae_seg.x import y" depends on cvae_seg.x (and on cvae_seg.x.y if a module)
        graph[name] = {m for m in _imports_of(path) if m in modules and m != name}
    cycle = _find_cycle(graph)
    assert cycle is None, " -> ".join(cycle or [])


def test_importing_the_package_leaves_the_training_layers_unloaded():
    """`import cvae_seg` for a model alone loads neither the run configs (pydantic, yaml)
    nor the data loaders (albumentations): they cost import time a user of the model never
    needs."""
    code = (
        "import sys, cvae_seg; cvae_seg.create_model('mnist_mlp', mlp_hidden=(4,), "
        "latent_channels=2); print(sorted(m for m in ('cvae_seg.config', 'cvae_seg.data', "
        "'albumentations', 'pydantic', 'yaml') if m in sys.modules))"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            check=True, env={**os.environ, "OMP_NUM_THREADS": "1"})  # fmt: skip
    assert result.stdout.strip() == "[]", result.stdout


def _find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, str] = {}

    def visit(node: str, path: list[str]) -> list[str] | None:
        state[node] = "open"
        for nxt in sorted(graph[node]):
            if state.get(nxt) == "open":
                return [*path, node, nxt]
            if nxt not in state and (found := visit(nxt, [*path, node])):
                return found
        state[node] = "done"
        return None

    for start in sorted(graph):
        if start not in state and (found := visit(start, [])):
            return found
    return None


def test_nothing_outside_the_models_calls_an_underscored_member_of_a_model():
    pattern = re.compile(r"\bmodel\._[a-z]\w*")
    offenders = []
    for folder in ("cvae_seg", "tests", "benchmarks", "tools"):
        for path in (ROOT / folder).rglob("*.py"):
            if PACKAGE / "models" in path.parents:
                continue
            offenders += [
                f"{path.relative_to(ROOT)}: {m}" for m in pattern.findall(path.read_text())
            ]
    assert not offenders, offenders


def test_every_public_name_is_in_the_api_reference():
    reference = (ROOT / "docs" / "api.md").read_text()
    # a name appears in code quotes; a submodule under its full name, `cvae_seg.metrics`
    missing = [n for n in cvae_seg.__all__ if f"`{n}" not in reference
               and f"`cvae_seg.{n}`" not in reference]  # fmt: skip
    assert not missing, f"docs/api.md does not describe {missing}"


def test_every_package_folder_is_a_tracked_package():
    """A folder without a committed __init__.py still imports from a checkout (a namespace
    package) but is left out of a built wheel."""
    import subprocess

    tracked = set(subprocess.run(["git", "ls-files", "cvae_seg"], cwd=ROOT, capture_output=True,
                                 text=True, check=True).stdout.split())  # fmt: skip
    if not tracked:
        pytest.skip("not a git checkout")
    folders = {path.parent for path in PACKAGE.rglob("*.py") if "__pycache__" not in path.parts}
    missing = [str(f.relative_to(ROOT)) for f in folders
               if str((f / "__init__.py").relative_to(ROOT)) not in tracked]  # fmt: skip
    assert not missing, f"no committed __init__.py in {missing}"


def test_inference_gives_every_submodule_its_own_mode_back():
    """A frozen encoder (eval mode inside a model in train mode) stays frozen after
    predict, sample and the likelihood; and the other way round."""
    model = _unet()
    x, y = _batch()
    model.train()
    model.backbone.encoder.eval()
    model.predict(x)
    model.sample(x, 2)
    model.log_likelihood(x, y, num_samples=2)
    assert model.training and not model.backbone.encoder.training
    assert model.backbone.decoder.training
    model.eval()
    model.backbone.decoder.train()
    model.sample(x, 2)
    assert not model.training and model.backbone.decoder.training


def test_encoder_weights_that_would_download_by_mistake_or_fail_say_so(monkeypatch):
    """A timm encoder reads False as 'download'; a failed download names encoder_weights."""
    import huggingface_hub
    import segmentation_models_pytorch as smp

    with pytest.raises(ValueError, match=r"encoder_weights=False .* give None"):
        cvae_seg.create_backbone("Unet", encoder_name=TEST_ENCODER, encoder_weights=False)

    def offline(*args, **kwargs):
        raise huggingface_hub.errors.LocalEntryNotFoundError("cannot reach the Hub")

    monkeypatch.setattr(smp, "create_model", offline)
    with pytest.raises(OSError, match=r"encoder_weights='imagenet': downloading .*'resnet18'.*"
                       r"cannot reach the Hub.*encoder_weights=None"):  # fmt: skip
        cvae_seg.create_backbone("Unet", encoder_name="resnet18", encoder_weights="imagenet")
