"""One loader, every family: load_text_to_image reads the family from the folder
(model_index.json when present, else transformer/'s class, SDXL's text_time UNet, vae/),
including folders the fine-tuner exports without a model_index.json."""
import json
import shutil

import pytest

from infodiff_lightning.denoisers import (FluxDenoiser, LatentDiffusionDenoiser, PixelTextDenoiser, SD3Denoiser,
                                          SDXLDenoiser, load_text_to_image)
from infodiff_lightning.denoisers.loading import model_family
from tiny_flux import save_flux_pipeline
from tiny_models import save_pixel_text, save_sd_pipeline
from tiny_sd3 import save_sd3_pipeline
from tiny_sdxl import save_sdxl_pipeline

SAVERS = {"sd": (save_sd_pipeline, LatentDiffusionDenoiser), "pixel": (save_pixel_text, PixelTextDenoiser),
          "sdxl": (save_sdxl_pipeline, SDXLDenoiser), "sd3": (save_sd3_pipeline, SD3Denoiser),
          "flux": (save_flux_pipeline, FluxDenoiser)}


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    root = tmp_path_factory.mktemp("families")
    return {name: save(root / name) for name, (save, _) in SAVERS.items()}


@pytest.mark.parametrize("family", SAVERS)
def test_each_familys_folder_loads_as_its_adapter(folders, family):
    assert model_family(folders[family]) == family
    assert type(load_text_to_image(folders[family])) is SAVERS[family][1]


@pytest.mark.parametrize("family", ["sdxl", "sd3", "flux"])
def test_a_folder_without_model_index_is_recognised_from_its_subfolders(folders, family, tmp_path):
    # what the fine-tuner's export writes: the components, no model_index.json
    bare = shutil.copytree(folders[family], tmp_path / family)
    (bare / "model_index.json").unlink()
    assert model_family(bare) == family


def test_a_transformer_of_another_kind_is_refused_by_name(folders, tmp_path):
    odd = shutil.copytree(folders["sd3"], tmp_path / "odd")
    (odd / "model_index.json").unlink()
    config = odd / "transformer" / "config.json"
    config.write_text(json.dumps({**json.loads(config.read_text()), "_class_name": "PixArtTransformer2DModel"}))
    with pytest.raises(ValueError, match="holds a PixArtTransformer2DModel; the adapters support"):
        load_text_to_image(odd)


def test_an_unknown_family_name_is_refused(folders):
    with pytest.raises(ValueError, match="family must be one of"):
        load_text_to_image(folders["sd"], family="sd4")


def test_a_missing_folder_is_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_text_to_image(tmp_path / "nothing_here")
