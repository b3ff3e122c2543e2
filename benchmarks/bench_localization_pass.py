"""The localization job's measurement of a batch: one pass per word (the job until
2026-12-06) against one pass for the batch with each row's word marked (``where``, the job
now), side by side in one process on the bundled world model, the same batches of held-out
rows, interleaved ``--repeats`` times. Reports seconds, denoiser calls, denoiser inputs
(``n_evals``; a call is padded to the micro-batch, evaluate.py) and whether every row's CMI
and map are the same bits.

    python benchmarks/bench_localization_pass.py [--rows 96] [--batch 16] [--n_draws 16]
"""
import argparse
import tempfile
import time
from pathlib import Path

import torch

from infodiff_lightning.contrasts import cmi_tag
from infodiff_lightning.data import LocalizationData
from infodiff_lightning.data.world_export import export_world
from infodiff_lightning.denoisers.loading import load_text_to_image
from infodiff_lightning.measurement import MeasurementSpec, measure_captions


def per_word(den, batch, spec_args):
    """The old path: one measure_captions per word of the batch -> (cmi values, maps) in row order."""
    words = batch["word"]
    values, maps = torch.zeros(len(words)), [None] * len(words)
    for w in sorted(set(words)):
        ks = [k for k, rw in enumerate(words) if rw == w]
        res = measure_captions(den, batch["image"][ks], [int(batch["id"][k]) for k in ks],
                               [batch["caption"][k] for k in ks], MeasurementSpec((w,), **spec_args))
        for j, k in enumerate(ks):
            values[k], maps[k] = res.cmi[w].value[j], res.cmi[w].map[j]
    return values, torch.stack(maps)


def one_pass(den, batch, spec_args):
    """The job's path now: one measure_captions, each row measured for its own word."""
    words = batch["word"]
    unique = sorted(set(words))
    where = {cmi_tag(w): [rw == w for rw in words] for w in unique}
    res = measure_captions(den, batch["image"], [int(i) for i in batch["id"]], list(batch["caption"]),
                           MeasurementSpec(tuple(unique), **spec_args), where)
    return (torch.stack([res.cmi[w].value[k] for k, w in enumerate(words)]),
            torch.stack([res.cmi[w].map[k] for k, w in enumerate(words)]))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="models/world")
    ap.add_argument("--rows", type=int, default=96)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--n_draws", type=int, default=16)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    tmp = Path(tempfile.mkdtemp())
    export_world(tmp / "heldout", "heldout", n=max(1, args.rows // 5))
    data = LocalizationData(root=str(tmp / "heldout"), image_size=32, batch_size=args.batch, limit=args.rows)
    data.setup("test")
    batches = list(data.test_dataloader())
    rows = sum(len(b["word"]) for b in batches)
    words_per_batch = sum(len(set(b["word"])) for b in batches) / len(batches)
    spec_args = {"n_draws": args.n_draws, "maps": True, "mi": False}
    den = load_text_to_image(args.model)
    inner = den.eps_hat
    calls = {"inputs": 0, "calls": 0}

    def counted(x, alpha, cond):
        calls["calls"] += 1
        calls["inputs"] += int(x.shape[0])
        return inner(x, alpha, cond)

    den.eps_hat = counted
    paths = {"one pass per word": per_word, "one pass per batch (where)": one_pass}
    seconds = {name: [] for name in paths}
    out, counts = {}, {}
    for _ in range(args.repeats):
        for name, path in paths.items():
            calls.update(inputs=0, calls=0)
            t = time.perf_counter()
            with torch.no_grad():
                out[name] = [path(den, b, spec_args) for b in batches]
            seconds[name].append(time.perf_counter() - t)
            den.clear_cache()  # each repeat encodes its own captions, as the job does per batch
            counts[name] = dict(calls)
    (a, b) = (out[n] for n in paths)
    same = all(torch.equal(x[0], y[0]) and torch.equal(x[1], y[1]) for x, y in zip(a, b))
    diff = max(float((x[0] - y[0]).abs().max()) for x, y in zip(a, b))
    print(f"{rows} rows in {len(batches)} batches of {args.batch} ({words_per_batch:.1f} words per batch), "
          f"{args.n_draws} draws, micro-batch {den.default_microbatch}; every row's CMI and map the same bits: {same} "
          f"(largest CMI difference {diff:.2e} nats; {torch.get_num_threads()} threads)")
    base = sorted(seconds["one pass per word"])[args.repeats // 2]
    for name in paths:
        median = sorted(seconds[name])[args.repeats // 2]
        print(f"{name:<28} {', '.join(f'{t:.2f}' for t in seconds[name])} s; median {median:.2f} s "
              f"({base / median:.2f}x faster than one pass per word); {counts[name]['calls']} calls, "
              f"{counts[name]['inputs']} inputs sent (padding included)")


if __name__ == "__main__":
    main()
