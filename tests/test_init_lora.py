"""DiffusionFineTuner(init_lora=...): a LoRA run continues an exported adapter (MI-TUNE's
later rounds train the previous round's adapter further, not a fresh one)."""
from __future__ import annotations

import pytest
import torch

from infodiff_lightning.models import TinyTextToImageSpec, build_tiny_text_to_image, save_components
from infodiff_lightning.modules import DiffusionFineTuner

WORDS = ("red", "blue", "square", "circle")


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """A base model folder and a rank-4 adapter exported from it, its lora_B moved off zero
    (a fresh adapter's lora_B is zero, so without the move it would equal the base model)."""
    root = tmp_path_factory.mktemp("init_lora")
    torch.manual_seed(0)
    save_components(build_tiny_text_to_image(TinyTextToImageSpec(words=WORDS)), root / "base")
    first = DiffusionFineTuner(pretrained=str(root / "base"), lora_rank=4)
    with torch.no_grad():
        for name, p in first.backbone.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.05)
    first.save_pretrained(root / "round1")
    return root, first


def _output(module: DiffusionFineTuner) -> torch.Tensor:
    """The backbone's eps prediction on a fixed input, caption and log-SNR."""
    den = module.denoiser
    spec = TinyTextToImageSpec(words=WORDS)
    x = torch.randn(2, spec.in_channels, spec.image_size, spec.image_size, generator=torch.Generator().manual_seed(1))
    alpha = torch.tensor([0.5, 2.0])
    with torch.no_grad():
        return den.eps_hat(x, alpha, ["a red square", "a blue circle"])


def test_a_continued_lora_starts_where_the_exported_adapter_ended(exported):
    # Same weights, rank and scaling: the continued module predicts exactly what the module
    # that exported the adapter predicts, and not what the base model predicts.
    root, first = exported
    first.eval()
    continued = DiffusionFineTuner(pretrained=str(root / "base"), lora_rank=4,
                                   init_lora=str(root / "round1" / "unet_lora")).eval()
    base = DiffusionFineTuner(pretrained=str(root / "base")).eval()
    assert torch.allclose(_output(continued), _output(first), rtol=0, atol=1e-6)
    assert not torch.allclose(_output(continued), _output(base), rtol=0, atol=1e-4)


def test_a_continued_lora_trains_only_the_adapter_weights(exported):
    root, _ = exported
    continued = DiffusionFineTuner(pretrained=str(root / "base"), lora_rank=4,
                                   init_lora=str(root / "round1" / "unet_lora"))
    names = continued.trainable_names()
    assert names and all("lora_" in n for n in names)


def test_init_lora_refuses_a_rank_other_than_the_adapters(exported):
    root, _ = exported
    with pytest.raises(ValueError, match="has rank 4, but lora_rank is 8"):
        DiffusionFineTuner(pretrained=str(root / "base"), lora_rank=8, init_lora=str(root / "round1" / "unet_lora"))


def test_init_lora_needs_a_lora_run(exported):
    root, _ = exported
    with pytest.raises(ValueError, match="init_lora continues an adapter"):
        DiffusionFineTuner(pretrained=str(root / "base"), init_lora=str(root / "round1" / "unet_lora"))


def test_init_lora_refuses_a_scaling_of_its_own(exported):
    # the adapter's lora_alpha is continued with its weights; another one would be ignored
    root, _ = exported
    with pytest.raises(ValueError, match="leave lora_targets and lora_alpha unset"):
        DiffusionFineTuner(pretrained=str(root / "base"), lora_rank=4, lora_alpha=8.0,
                           init_lora=str(root / "round1" / "unet_lora"))
