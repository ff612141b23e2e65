"""The CUDA paths: mixed precision, channels-last, models and checkpoints moved to and from
the GPU, and the random streams a sample grid must leave alone.

Skipped without a CUDA GPU (every CPU run, CI included); `pytest -m gpu` runs them where one
is, and benchmarks/device_check.sh runs them on a lent machine.
"""

import numpy as np
import pytest
import torch
from conftest import TEST_ENCODER, tiny_demo_config

import cvae_seg
from cvae_seg.config import DataConfig
from cvae_seg.data import build_dataset
from cvae_seg.evaluation import evaluate
from cvae_seg.training import load_checkpoint, load_trained, train
from cvae_seg.visualization import sample_grid

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU"),
]
CUDA = torch.device("cuda")


def _unet(objective: str = "cvae") -> cvae_seg.CVAE:
    torch.manual_seed(0)
    return cvae_seg.create_model(
        "Unet", encoder_name=TEST_ENCODER, classes=3, objective=objective, latent_channels=4
    ).eval()


def _batch(size: int = 64) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(2, 3, size, size, generator=generator)
    return x, torch.randint(0, 3, (2, size, size), generator=generator)


@pytest.fixture(autouse=True)
def _full_precision_matmuls():
    """TF32 would make the CPU comparisons loose by 1e-3; training turns on cuDNN's
    benchmark mode (kernels chosen by timing). Each test starts from these and leaves them."""
    backends = torch.backends
    saved = backends.cuda.matmul.allow_tf32, backends.cudnn.allow_tf32, backends.cudnn.benchmark
    backends.cuda.matmul.allow_tf32 = backends.cudnn.allow_tf32 = False
    backends.cudnn.benchmark = False
    yield
    backends.cuda.matmul.allow_tf32, backends.cudnn.allow_tf32, backends.cudnn.benchmark = saved


def test_the_gpu_predicts_and_scores_as_the_cpu_does():
    model, (x, y) = _unet("cnn"), _batch()  # deterministic: its likelihood is exact
    on_cpu = model.predict(x), model.log_likelihood(x, y)
    model.to(CUDA)
    on_gpu = model.predict(x.to(CUDA)), model.log_likelihood(x.to(CUDA), y.to(CUDA))
    torch.testing.assert_close(on_gpu[0].cpu(), on_cpu[0], rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(on_gpu[1].cpu(), on_cpu[1], rtol=1e-4, atol=1e-3)


def test_a_saved_model_maps_onto_the_gpu_with_the_same_predictions(tmp_path):
    model, (x, _) = _unet(), _batch()
    loaded = cvae_seg.from_pretrained(model.save_pretrained(tmp_path), map_location="cuda")
    assert {p.device.type for p in loaded.parameters()} == {"cuda"}
    torch.testing.assert_close(loaded.predict(x.to(CUDA)).cpu(), model.predict(x), rtol=1e-4,
                               atol=1e-4)  # fmt: skip


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_mixed_precision_samples_and_likelihoods_are_finite(dtype):
    model, (x, y) = _unet(), _batch()
    model.to(CUDA)
    with torch.autocast("cuda", dtype=dtype):
        samples = model.sample(x.to(CUDA), 4)
        ll = model.log_likelihood(x.to(CUDA), y.to(CUDA), num_samples=8)
        loss = model.loss(x.to(CUDA), y.to(CUDA)).loss
    assert samples.shape == (4, 2, 3, 64, 64) and bool(torch.isfinite(samples.float()).all())
    assert ll.dtype == torch.float32 and bool(torch.isfinite(ll).all())  # AMP-safe in float32
    assert bool(torch.isfinite(loss))


def test_amp_and_channels_last_train_resume_and_evaluate_on_the_gpu(tmp_path):
    settings = ["train.amp=true", "train.channels_last=true", "train.eval_interval=2"]
    config = tiny_demo_config(*settings, "train.max_steps=2")
    first = train(config, tmp_path, device="cuda", progress=False)
    state = load_checkpoint(tmp_path / "last.pt")
    assert state["step"] == 2 and len(state["rng"]["cuda"]) == torch.cuda.device_count()
    longer = tiny_demo_config(*settings, "train.max_steps=4")
    resumed = train(longer, tmp_path, resume=tmp_path / "last.pt", device="cuda", progress=False)
    assert load_checkpoint(tmp_path / "last.pt")["step"] == 4
    for result in (first, resumed):
        assert all(np.isfinite(v) for v in result["last"].values() if isinstance(v, float))
    model, saved_config, classes = load_trained(tmp_path / "best.pt", CUDA)
    loader = torch.utils.data.DataLoader(
        build_dataset(saved_config.data, "val", train=False), batch_size=4
    )
    scores = evaluate(model, loader, classes, CUDA, num_samples=4, autocast_dtype=torch.bfloat16,
                      progress=None)  # fmt: skip
    assert 0 <= scores["pixel_accuracy"] <= 100 and np.isfinite(scores["nll"])


def test_a_sample_grid_on_the_gpu_leaves_the_callers_cuda_stream_alone():
    data = build_dataset(DataConfig(dataset="shapes", size=32, shapes_val=3), "val", train=False)
    model = cvae_seg.create_model(
        "Unet", encoder_name=TEST_ENCODER, classes=len(data.classes), objective="cvae"
    ).to(CUDA)
    torch.cuda.manual_seed(7)
    expected = torch.rand(4, device=CUDA)
    torch.cuda.manual_seed(7)
    first = sample_grid(model, data, [0, 1], num_samples=3, seed=5)
    torch.testing.assert_close(torch.rand(4, device=CUDA), expected)
    again = sample_grid(model, data, [0, 1], num_samples=3, seed=5)
    np.testing.assert_array_equal(np.asarray(first), np.asarray(again))
