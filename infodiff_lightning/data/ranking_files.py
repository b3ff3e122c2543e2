"""Caption-ranking benchmarks read from their released files (ARO, Yuksekgonul et al.
2023), for the real downloads or the embedded world's export (data/world_export.py):

    visual_genome_relation.json, visual_genome_attribution.json   ARO's VG release, images in
        images/ beside them: [{image_path, true_caption, false_caption, bbox_x/y/w/h, and
        relation_name or attributes}]
    coco_karpathy_test.json, flickr30k_test.json   the Karpathy test splits ARO builds
        COCO-Order and Flickr30k-Order from: [{image, caption: [captions]}], images under
        val2014/ or flickr30k-images/ as ``image`` says
    vg_attribution.json, vg_relation.json, coco_order.json, flickr_order.json   the same
        benchmarks written out (the world's export; order rows {image_path, caption, perturbed})

With ``files`` left out, every one of these names found in ``root`` is read (in the order
above: :data:`KNOWN_FILES`), so pointing ``root`` at the unpacked download is enough. A
VG ``image_path`` that is not a file under ``root`` is looked up under ``root/images/``,
where ARO's release keeps it.

Each row becomes one item: the image, its candidate captions with the true one first, and
its groups: the benchmark (the released VG files are the groups ``vg_relation`` and
``vg_attribution``, the Karpathy files ``coco_order`` and ``flickr_order``; any other file
its stem), and where the row names one, its relation (``vg_relation/left of``) or attribute
pair (``vg_attribution/red_blue``), over which ARO macro-averages. A Karpathy file gives
one test case per caption, built by data/aro_order.py (ARO's normalisation and
perturbations, seeded by ``perturbation_seed``). As ARO does, a VG row's image is cropped
to its box unless ``crop_to_bbox`` is off. A row whose image cannot be read is an item with
its ``error`` set (the job records it and goes on), and so is a row whose captions, image
path or box are unusable (missing, null, not text), or whose image path leaves ``root``
(data/rows.py); a file that is not a JSON list of rows is an error of the whole job.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import lightning as L
import torch
from torch.utils.data import DataLoader, Dataset

from .aro_order import Tagger, case_rng, order_candidates, spacy_tagger
from .caption_folder import load_image
from .rows import RowError, inside, read_json, some_usable, text_field
from .loaders import evaluation_loader

__all__ = ["RankingFiles", "CaptionRankingData", "collate_ranking", "RANKING_FILES", "KNOWN_FILES", "RankingRow"]

#: The kinds of ARO benchmark a file can be, whose headline figures differ (analyses/aro.py).
KINDS = ("relation", "attribution", "order")
#: The folder beside the JSON files where ARO's release keeps the VG images.
ARO_IMAGES = "images"
#: The world export's files (data/world_export.py).
RANKING_FILES = ("vg_attribution.json", "vg_relation.json", "coco_order.json")
#: ARO's released file names and the group each is read as.
RELEASED_GROUPS = {"visual_genome_attribution.json": "vg_attribution", "visual_genome_relation.json": "vg_relation",
                   "coco_karpathy_test.json": "coco_order", "flickr30k_test.json": "flickr_order"}
#: The Karpathy-split files, from which the order test cases are built at load time.
KARPATHY_FILES = ("coco_karpathy_test.json", "flickr30k_test.json")
#: Every file name read when ``files`` is not given, in this order.
KNOWN_FILES = (*RANKING_FILES, "flickr_order.json", *RELEASED_GROUPS)


def _candidates(row: dict, where: str) -> list[str]:
    """The row's candidate captions, true first: at least two distinct, non-empty strings."""
    if "true_caption" in row and "false_caption" in row:
        false = row["false_caption"]
        false = false if isinstance(false, list) else [false]
        cands = [text_field(row, "true_caption")] + [text_field({"false_caption": f}, "false_caption") for f in false]
    elif "caption" in row and "perturbed" in row:
        perturbed = row["perturbed"]
        if not isinstance(perturbed, list):
            raise RowError(f"field 'perturbed' must be a list of captions, got {type(perturbed).__name__}")
        cands = [text_field(row, "caption")] + [text_field({"perturbed": c}, "perturbed") for c in perturbed]
    else:
        raise RowError(f"a row needs true_caption + false_caption (VG layout) or caption + perturbed "
                       f"(order layout); it has {', '.join(sorted(map(str, row))) or 'no fields'}")
    if len(cands) < 2 or len(set(cands)) < len(cands):
        raise RowError(f"needs at least two distinct candidate captions, got {cands}")
    return cands


BOX_FIELDS = ("bbox_x", "bbox_y", "bbox_w", "bbox_h")


def _subgroup(row: dict, where: str) -> tuple[str, str | None]:
    """(ARO kind, subgroup) of a row: a VG row's relation or attribute pair; None for order rows."""
    if "relation_name" in row:
        return "relation", str(row["relation_name"])
    if "attributes" in row:
        attrs = row["attributes"]
        if not isinstance(attrs, list) or not attrs:
            raise RowError(f"attributes must be a non-empty list, got {attrs!r}")
        return "attribution", "_".join(str(a) for a in attrs)
    return "order", None


def _box(row: dict, where: str) -> tuple[float, float, float, float] | None:
    present = [k for k in BOX_FIELDS if k in row]
    if not present:
        return None
    if len(present) < len(BOX_FIELDS):
        raise RowError(f"a box needs all of {', '.join(BOX_FIELDS)}; it has {', '.join(present)}")
    try:
        return tuple(float(row[k]) for k in BOX_FIELDS)
    except (TypeError, ValueError):
        raise RowError(f"box fields must be numbers, got {[row[k] for k in BOX_FIELDS]}") from None


def _kind(rows: list) -> str:
    """A file's ARO kind (:data:`KINDS`) from its usable rows: relation rows name a
    ``relation_name``, attribution rows ``attributes``; anything else ranks whole captions."""
    kinds = {r.kind for r in rows if not r.error}
    return next((k for k in KINDS if k in kinds), KINDS[-1])


@dataclass(frozen=True)
class RankingRow:
    group: str
    image_path: str
    candidates: list
    subgroup: str | None = None
    box: tuple | None = None
    error: str = ""  # why the row cannot be used ("" if it can): recorded as its failure
    kind: str = "order"  # one of KINDS
    equal_to_caption: int = 0  # built order cases: perturbations equal to the caption (kept, as ARO does)

    @property
    def groups(self) -> list[str]:
        """The file's group, then the relation / attribute subgroup where there is one."""
        return [self.group] + ([f"{self.group}/{self.subgroup}"] if self.subgroup else [])


def _group(name: str) -> str:
    """The group a file is read as: ARO's benchmark for a released name, else the file's stem."""
    return RELEASED_GROUPS.get(Path(name).name, Path(name).stem)


class RankingFiles(Dataset):
    """Items {"id" (position), "image", "candidates" (true first), "group", "groups", "error"}.

    ``files``: names under ``root`` (default: every one of :data:`KNOWN_FILES` there).
    ``perturbation_seed``, ``pos_tagger``: how the order cases of a Karpathy file are built
    (data/aro_order.py; ``pos_tagger`` an installed spaCy pipeline, e.g. "en_core_web_sm",
    or a tagger function; without one only the two POS-free perturbations are made)."""

    def __init__(self, root: str | Path, files: Sequence[str] | None = None, image_size: int = 32,
                 limit: int | None = None, crop_to_bbox: bool = True, perturbation_seed: int = 0,
                 pos_tagger: str | Tagger | None = None):
        self.root, self.image_size, self.crop_to_bbox = Path(root), image_size, crop_to_bbox
        if not self.root.is_dir():
            raise FileNotFoundError(f"root {root}: no such folder")
        if files is None:
            files = [n for n in KNOWN_FILES if (self.root / n).is_file()]
            if not files:
                raise FileNotFoundError(f"root {root} holds none of the benchmark files {', '.join(KNOWN_FILES)}")
        groups = [_group(n) for n in files]
        if len(set(groups)) < len(groups):
            raise ValueError(f"files {', '.join(files)} in {root}: two of them are the same benchmark "
                             f"({', '.join(groups)}); name one of each in files")
        self.tagger = spacy_tagger(pos_tagger) if isinstance(pos_tagger, str) else pos_tagger
        self.seed = perturbation_seed
        self.rows: list[RankingRow] = []
        self.kinds: dict[str, str] = {}
        self.perturbations: dict[str, tuple[str, ...]] = {}
        for name, group in zip(files, groups):
            path = self.root / name
            if not path.is_file():
                raise FileNotFoundError(f"files: {name} is not in {root}")
            rows = read_json(path)
            if not isinstance(rows, list):
                raise ValueError(f"{name}: expected a JSON list of rows, got {type(rows).__name__}")
            if Path(name).name in KARPATHY_FILES:
                read = self._karpathy_rows(name, group, rows)[:limit]
            else:
                read = [self._row(group, row, f"{name} row {k}") for k, row in enumerate(rows[:limit])]
            some_usable([r.error for r in read], name)
            self.kinds[group] = _kind(read)
            self.rows += read
        if not self.rows:
            raise ValueError(f"files {', '.join(files)} in {root} hold no rows")

    def _karpathy_rows(self, name: str, group: str, rows: list) -> list[RankingRow]:
        """One order case per caption of each image (data/aro_order.py), in file order; an
        entry whose image or captions are unusable gives one failed row naming its field."""
        out = []
        for k, entry in enumerate(rows):
            where = f"{name} row {k}"
            try:
                if not isinstance(entry, dict):
                    raise RowError("not a JSON object")
                image = self._image_file(entry.get("image"), "image").relative_to(self.root).as_posix()
                captions = entry.get("caption")
                if not isinstance(captions, list) or not captions:
                    raise RowError(f"field 'caption' must be a non-empty list of captions, got {captions!r:.60}")
            except RowError as e:
                out.append(RankingRow(group, "", [], error=f"{where}: {e}"))
                continue
            for j, caption in enumerate(captions):
                try:
                    caption = text_field({"caption": caption}, "caption")
                except RowError as e:
                    out.append(RankingRow(group, "", [], error=f"{where} caption {j}: {e}"))
                    continue
                cands, names = order_candidates(caption, case_rng(self.seed, group, k, j), self.tagger)
                self.perturbations[group] = names
                out.append(RankingRow(group, image, cands, equal_to_caption=sum(c == cands[0] for c in cands[1:])))
        return out

    def _row(self, group: str, row, where: str) -> RankingRow:
        """One ranking row, or a row with its ``error`` set when a field is unusable."""
        try:
            if not isinstance(row, dict):
                raise RowError("not a JSON object")
            cands = _candidates(row, where)
            image = self._image_file(row.get("image_path"), "image_path")
            kind, sub = _subgroup(row, where)
            return RankingRow(group, image.relative_to(self.root).as_posix(), cands, sub, _box(row, where), kind=kind)
        except RowError as e:
            return RankingRow(group, "", [], error=f"{where}: {e}")

    def _image_file(self, image_path, field: str) -> Path:
        """The row's image under ``root``, or under ``root/images/`` where ARO's release keeps
        it; both inside the folder (data/rows.py). A file found in neither is returned as
        under ``root``, and reading it fails that row."""
        direct = inside(self.root, image_path, field)
        if direct.is_file() or not (self.root / ARO_IMAGES).is_dir():
            return direct
        released = inside(self.root / ARO_IMAGES, image_path, field)
        return released if released.is_file() else direct

    def benchmarks(self) -> dict[str, dict]:
        """Per file (group): its ARO kind (analyses/aro.py), the rows read per subgroup, and
        for built order files the perturbations made and how many equal their caption."""
        out = {}
        for group, kind in self.kinds.items():
            rows = [r for r in self.rows if r.group == group]
            subs: dict[str, int] = {}
            for r in rows:
                if r.subgroup is not None:
                    subs[r.subgroup] = subs.get(r.subgroup, 0) + 1
            out[group] = {"kind": kind, "subgroup_rows": subs}
            if group in self.perturbations:
                out[group].update(perturbations=list(self.perturbations[group]),
                                  equal_to_caption=sum(r.equal_to_caption for r in rows),
                                  cases_with_equal=sum(r.equal_to_caption > 0 for r in rows))
        return out

    @property
    def groups(self) -> list[str]:
        """Every group an item belongs to: the files in order, then the subgroups (sorted)."""
        files = list(dict.fromkeys(r.group for r in self.rows))
        return files + sorted({g for r in self.rows for g in r.groups[1:]})

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, i: int) -> dict:
        row = self.rows[i]
        item = {"id": i, "candidates": row.candidates, "group": row.group, "groups": row.groups, "error": row.error}
        if row.error:
            item["image"] = torch.zeros(3, self.image_size, self.image_size)
            return item
        try:
            item["image"] = load_image(self.root / row.image_path, self.image_size,
                                       row.box if self.crop_to_bbox else None)
        except (ValueError, OSError) as e:
            item["image"] = torch.zeros(3, self.image_size, self.image_size)
            item["error"] = str(e)
        return item


def collate_ranking(items: list[dict]) -> dict:
    """Images stacked; ids, candidate lists, groups and errors kept as lists (candidate
    lists differ in length between groups)."""
    return {"image": torch.stack([it["image"] for it in items]), "id": [it["id"] for it in items],
            "candidates": [it["candidates"] for it in items], "group": [it["group"] for it in items],
            "groups": [it["groups"] for it in items],
            "error": [it["error"] for it in items]}


class CaptionRankingData(L.LightningDataModule):
    """The ranking items of ``files`` under ``root`` (default: every benchmark file found
    there, :data:`KNOWN_FILES`), each sample measured exactly once across devices.
    ``limit``: the first rows (test cases) of each file (quick runs); ``crop_to_bbox``: crop
    VG images to their row's box, as ARO does (off for images that are the region already,
    such as the embedded world's scenes); ``perturbation_seed`` and ``pos_tagger``: how the
    order cases of a Karpathy file are built (:class:`RankingFiles`)."""

    def __init__(self, root: str, files: Sequence[str] | None = None, image_size: int = 32, batch_size: int = 16,
                 limit: int | None = None, crop_to_bbox: bool = True, num_workers: int = 0,
                 perturbation_seed: int = 0, pos_tagger: str | None = None):
        super().__init__()
        self.save_hyperparameters()
        self.test_set = RankingFiles(root, files, image_size, limit, crop_to_bbox, perturbation_seed, pos_tagger)

    def benchmarks(self) -> dict[str, dict]:
        return self.test_set.benchmarks()

    def groups(self) -> list[str]:
        return self.test_set.groups

    def test_captions(self) -> list[str]:
        return [c for r in self.test_set.rows if not r.error for c in r.candidates]

    def describe_test_split(self) -> str:
        counts = {g: sum(1 for r in self.test_set.rows if r.group == g) for g in dict.fromkeys(
            r.group for r in self.test_set.rows)}
        text = f"{len(self.test_set)} ranking items in {self.hparams.root}: " + ", ".join(
            f"{g} {n}" for g, n in counts.items())
        for group, b in self.benchmarks().items():
            if "perturbations" in b:
                text += (f"; {group} built with {', '.join(b['perturbations'])}"
                         + ("" if len(b["perturbations"]) == 4 else " (shuffle_nouns_and_adj and "
                            "shuffle_allbut_nouns_and_adj need a POS tagger: data.pos_tagger; not produced)"))
        return text

    def test_dataloader(self) -> DataLoader:
        return evaluation_loader(self.test_set, self.hparams.batch_size, self.trainer, self.hparams.num_workers,
                                 collate_fn=collate_ranking)
