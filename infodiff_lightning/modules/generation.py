"""Generation as a job: M candidates per prompt from seeded noise, written as a caption folder.

For each prompt of the datamodule's test split (data/prompts.py: a prompt
file or the world's captions; any captioned datamodule works, only ids and captions are
read), ``candidates`` images, each from the noise

    x_T(p, m) = randn(shape, generator = id_generator(seed, p, m))                       (NOISE)

of prompt id p and candidate index m (draws.py), sampled with the model's own sampler
(analyses/regeneration.py: DDIM for DDPM-type models, Euler for flow matching) over
``steps`` steps under classifier-free guidance of scale ``guidance``
(analyses/guidance.py; 1: the plain conditional model). While sampling, MI-TUNE's
trajectory score of each candidate (analyses/trajectory_score.py, eq. TRAJ) is summed
from the same calls.

**Reproducible by id.** A candidate's noise depends on (seed, p, m) alone, and the
candidates of a prompt are sampled in fixed chunks of ``chunk`` (candidates m in
[k chunk, (k + 1) chunk)), never mixed with other prompts, so a candidate's bits do not
depend on the batch, the rank or a resume (a chunk with any candidate missing is sampled
again whole, and only the missing ones are written).

**Output** (in the run folder): ``images/<prompt>_<m>.png`` with ``images/<prompt>_<m>.txt``
(its prompt) beside it: a caption folder (data/caption_folder.py) that train.py and the
analysis jobs read; and one record per candidate in ``per_image.rank<k>.jsonl`` (id =
p * candidates + m, prompt, candidate, caption, seed_key [seed, p, m], file relative to
the run folder, trajectory_score). The selection job (modules/selection.py) reads both.
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch

from ..analyses.guidance import GuidedDenoiser
from ..analyses.regeneration import regenerate, regeneration_grid, sampler_name
from ..analyses.trajectory_score import MI_TUNE_SKIP, TrajectoryScore, training_timesteps
from ..draws import id_generator
from ..metrics.samples import SampleRows, mean_and_stderr
from .records import Field, Schema
from .text_to_image_job import TextToImageJob

__all__ = ["Generation", "candidate_noise", "to_uint8", "IMAGE_FOLDER"]

#: The caption folder inside the run folder.
IMAGE_FOLDER = "images"


def candidate_noise(seed: int, prompt_id: int, candidates, shape: tuple[int, ...]) -> torch.Tensor:
    """Eq. NOISE for the candidate indices ``candidates`` of one prompt: (len, *shape) float32."""
    return torch.stack([torch.randn(shape, generator=id_generator(seed, prompt_id, int(m))) for m in candidates])


def to_uint8(image: torch.Tensor) -> np.ndarray:
    """(3, H, W) in [-1, 1] -> (H, W, 3) uint8, the inverse of load_image's x / 127.5 - 1."""
    return ((image.detach().cpu().float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).permute(1, 2, 0).numpy()


class Generation(TextToImageJob):
    """M candidates per prompt, seeded by (prompt id, candidate), with the model's sampler
    under classifier-free guidance, and their trajectory scores (module doc).

    Args:
        pretrained: diffusers folder or hub id; lora: optional LoRA adapter folder (unet_lora/).
        candidates: images per prompt (M; MI-TUNE used 50).
        steps: sampler steps per image.
        guidance: classifier-free guidance scale w (1: the conditional model alone).
        seed: the seed of eq. NOISE.
        chunk: candidates per sampler call (null: all of a prompt's); part of a run's
            identity because a candidate's bits depend on it.
        skip_timesteps: the trajectory score leaves out the steps at training timesteps
            t <= skip_timesteps (MI-TUNE: 50 of 1000).
        image_size: pixel size of latent models (null: the pixel model's own size).
        torch_dtype: e.g. "float16" on a GPU; fail_fast: stop at the first failed prompt.
    """

    def __init__(self, pretrained: str, lora: str | None = None, candidates: int = 8, steps: int = 50,
                 guidance: float = 1.0, seed: int = 0, chunk: int | None = None,
                 skip_timesteps: int = MI_TUNE_SKIP, image_size: int | None = None, torch_dtype: str | None = None,
                 fail_fast: bool = False):
        if candidates < 1:
            raise ValueError(f"candidates must be >= 1, got {candidates}")
        if steps < 1:
            raise ValueError(f"steps must be >= 1, got {steps}")
        if not guidance >= 0:
            raise ValueError(f"guidance must be >= 0 (1: plain conditional), got {guidance}")
        if chunk is not None and chunk < 1:
            raise ValueError(f"chunk must be >= 1 (or null: all candidates of a prompt per call), got {chunk}")
        if skip_timesteps < 0:
            raise ValueError(f"skip_timesteps must be >= 0, got {skip_timesteps}")
        super().__init__(pretrained, lora, torch_dtype, 0, fail_fast)
        self.candidates, self.steps, self.guidance, self.seed = candidates, steps, float(guidance), seed
        self.chunk = candidates if chunk is None else min(chunk, candidates)
        self.skip_timesteps = skip_timesteps
        self.shape = self._x_shape(image_size)
        self.grid = regeneration_grid(self.denoiser, steps)
        self.scores = SampleRows(1)
        self.schema = Schema([Field("prompt", "count"), Field("candidate", "count"), Field("caption", "text"),
                              Field("seed_key", "text"), Field("file", "text"), Field("trajectory_score")])

    def _x_shape(self, image_size: int | None) -> tuple[int, ...]:
        """The shape of one x the sampler starts from (latents for latent models)."""
        own = getattr(self.denoiser, "sample_shape", None)
        if own is not None:
            if image_size is not None and image_size != own[-1]:
                raise ValueError(f"image_size: this pixel model makes {own[-1]}x{own[-2]} images, got {image_size}")
            return tuple(own)
        if image_size is None:
            raise ValueError(f"image_size: give the image size for {type(self.denoiser).__name__} (a latent model)")
        return tuple(self.denoiser.encode(torch.zeros(1, 3, image_size, image_size)).shape[1:])

    def describe_run(self, datamodule) -> str:
        return (f"generating {self.candidates} candidates for each of {datamodule.describe_test_split()} "
                f"({sampler_name(self.denoiser)}, {self.steps} steps, guidance {self.guidance})")

    # ---- one batch: a batch of prompts is a batch of their candidates ------------------
    def candidate_id(self, prompt_id: int, m: int) -> int:
        return int(prompt_id) * self.candidates + int(m)

    def batch_items(self, batch) -> tuple[list[int], list[str]]:
        ids, errors = [], []
        for p, e in zip(batch["id"], batch["error"]):
            ids += [self.candidate_id(int(p), m) for m in range(self.candidates)]
            errors += [str(e)] * self.candidates
        return ids, errors

    def sample(self, prompt_id: int, caption: str, ms: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
        """(images (n, 3, H, W) in [-1, 1], trajectory scores (n,)) of candidates ``ms`` of one
        prompt, sampled together (one chunk)."""
        score = TrajectoryScore(training_timesteps(self.denoiser), self.skip_timesteps)
        guided = GuidedDenoiser(self.denoiser, self.guidance, observer=score)
        noise = candidate_noise(self.seed, prompt_id, ms, self.shape).to(self.device)
        x = regenerate(guided, noise, [caption] * len(ms), self.grid)
        latents = getattr(self.denoiser, "latents", None)  # latent models: the VAE decodes x
        images = latents.decode(x) if latents is not None else x
        return images.float().clamp(-1, 1), score.score

    def measure_samples(self, batch, keep: list[int], ids: list[int]) -> list[dict]:
        from PIL import Image

        folder = Path(self._out) / IMAGE_FOLDER
        folder.mkdir(parents=True, exist_ok=True)
        wanted: dict[int, set[int]] = {}  # prompt position in the batch -> candidates to write
        for k in keep:
            wanted.setdefault(k // self.candidates, set()).add(k % self.candidates)
        samples = []
        for pos, ms in wanted.items():
            p, caption = int(batch["id"][pos]), str(batch["caption"][pos])
            for start in range(0, self.candidates, self.chunk):
                chunk = list(range(start, min(start + self.chunk, self.candidates)))
                if not ms.intersection(chunk):
                    continue
                images, scores = self.sample(p, caption, chunk)
                for j, m in enumerate(chunk):
                    if m not in ms:
                        continue  # written before: sampled again only because its chunk was
                    name = f"{p:06d}_{m:03d}"
                    Image.fromarray(to_uint8(images[j])).save(folder / f"{name}.png")
                    (folder / f"{name}.txt").write_text(caption + "\n")
                    for suffix in (".png", ".txt"):
                        os.chmod(folder / f"{name}{suffix}", 0o644)
                    samples.append({"id": self.candidate_id(p, m), "prompt": p, "candidate": m, "caption": caption,
                                    "seed_key": [self.seed, p, m], "file": f"{IMAGE_FOLDER}/{name}.png",
                                    "trajectory_score": float(scores[j])})
        return samples

    def update_metrics(self, records: list[dict]) -> None:
        if records:
            self.scores.update(torch.tensor([[r["trajectory_score"]] for r in records], dtype=torch.float64),
                               [r["id"] for r in records])

    def results(self) -> dict:
        rows = self.scores.compute()  # one collective
        ids = rows["ids"].to(torch.long).reshape(-1)
        values = rows["values"].reshape(-1, 1)
        out = {"sampler": sampler_name(self.denoiser), "steps": self.steps, "guidance": self.guidance,
               "candidates_per_prompt": self.candidates, "images": int(ids.numel()),
               "prompts": int(torch.unique(ids // self.candidates).numel()), "folder": IMAGE_FOLDER}
        if ids.numel():
            mean, se = mean_and_stderr(values[:, 0])
            out["trajectory_score"] = {"mean": float(mean), "stderr": float(se) if se == se else None}
        return out

    def report_lines(self, results: dict) -> list[str]:
        lines = ["| prompts | candidates each | images | sampler | steps | guidance |", "|---:|---:|---:|---|---:|---:|",
                 f"| {results['prompts']} | {results['candidates_per_prompt']} | {results['images']} | "
                 f"{results['sampler']} | {results['steps']} | {results['guidance']} |"]
        if "trajectory_score" in results:
            t = results["trajectory_score"]
            lines += ["", f"MI-TUNE trajectory score (a ranking heuristic, not a calibrated MI): mean {t['mean']:.4g}"
                      + (f" +- {t['stderr']:.2g}" if t["stderr"] is not None else "") + " over the images."]
        lines += ["", f"Images and captions: `{IMAGE_FOLDER}/` (a caption folder)."]
        return lines
