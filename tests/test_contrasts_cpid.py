"""The caption pipeline's conditional PID is wired to the right conditions.

A text front end over the context-XOR toy (denoisers/pid_toys.py): a caption names the
three labels with words, "red"/"blue" for y1, "square"/"round" for y2 and
"left"/"right" for the context c, and the exact mixture denoiser conditions on the
labels its caption names (a missing word = unobserved). x follows y1 xor c, so given
the context, y1 carries everything about x and y2 nothing: the CPID of the pair
(y1-word, y2-word) is all unique to the first word. caption_contrasts builds its
conditions by deleting words from captions; pid() on label columns builds them
directly. Both must agree draw for draw, and the planted answer must come out on the
right side: swapping the two sources in the pipeline puts it in unique2 and fails.
"""
import torch

from infodiff_lightning.contrasts import caption_contrasts
from infodiff_lightning.denoisers import DenoiserBase
from infodiff_lightning.denoisers.pid_toys import context_xor_system, pid_columns
from infodiff_lightning.draws import sample_draws
from infodiff_lightning.integrate import TruncatedLogistic
from infodiff_lightning.pid import conditional_pid

WORDS = ({"blue": 0, "red": 1}, {"round": 0, "square": 1}, {"right": 0, "left": 1})


class CaptionedToy(DenoiserBase):
    """Captions -> label rows (-1 where the caption does not name the label)."""

    tokenizer = None  # words are split on white space

    def __init__(self, system):
        self.system = system

    def null_conditions(self, n):
        return [""] * n

    def labels(self, caption: str) -> list[int]:
        words = caption.split()
        return [next((v for w, v in vocab.items() if w in words), -1) for vocab in WORDS]

    def eps_hat(self, x_alpha, alpha, conditions):
        rows = torch.tensor([self.labels(c) for c in conditions])
        return self.system.eps_hat(x_alpha, alpha, rows)


def caption(y) -> str:
    return " ".join(next(w for w, v in vocab.items() if v == int(val)) for vocab, val in zip(WORDS, y))


def test_caption_cpid_equals_label_cpid_and_puts_the_planted_information_in_the_first_source():
    system = context_xor_system()
    g = torch.Generator().manual_seed(0)
    x, y = system.sample(400, g)
    keep = (y[:, 0] == 1) & (y[:, 1] == 1)  # captions holding both "red" and "square"
    x, y = x[keep], y[keep]
    captions = [caption(row) for row in y]
    draws = sample_draws(len(x), 16, (4,), TruncatedLogistic(0.0, 2.0, 6.0), g, x.dtype)
    res = caption_contrasts(CaptionedToy(system), x, captions, pairs=[("red", "square")], draws=draws)
    got = res.pid[("red", "square")]
    want = conditional_pid(system, x, *pid_columns(y, context=(2,)), draws=draws)
    assert torch.allclose(got.values(), want.values(), atol=1e-10)
    # Given c, y2 ("square") is irrelevant: i2 = 0 and i12 = i1 on every draw, so r = u2 = s = 0
    # exactly, and everything is unique to y1 ("red"), many standard errors from 0.
    values = got.values()
    assert float(values[:, [0, 2, 3]].abs().max()) < 1e-9
    u1, se = got.dataset_mean()["unique1"]
    assert u1 > 5 * se  # about 0.5 nats +- 0.05 over the ~100 captions with both words
