"""Word-overlap baseline: predict from the Jaccard overlap of the two sentences' word sets.

The `full` gate prints `baseline(dm)` beside BiMPM, so a reader sees how much of the score a
model that ignores order, synonyms and meaning already gets.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence


def jaccard(a: Sequence[str], b: Sequence[str]) -> float:
    """|A ∩ B| / |A ∪ B| of the two token sets (0 when both are empty)."""
    sa, sb = set(a), set(b)
    union = len(sa | sb)
    return len(sa & sb) / union if union else 0.0


def fit_threshold(scores: Sequence[float], labels: Sequence[int]) -> float:
    """The threshold t maximising accuracy of `label = 1 if score >= t else 0` on these pairs."""
    pairs = sorted(zip(scores, labels, strict=True))
    n_pos = sum(1 for _, y in pairs if y == 1)
    # Sweep t upward over the distinct scores; at each t, everything below t is predicted 0.
    best_t, best_correct = float("-inf"), n_pos  # t = -inf: everything predicted 1
    neg_below, pos_below, i = 0, 0, 0
    while i < len(pairs):
        s = pairs[i][0]
        while i < len(pairs) and pairs[i][0] == s:
            neg_below += pairs[i][1] != 1
            pos_below += pairs[i][1] == 1
            i += 1
        t = pairs[i][0] if i < len(pairs) else float("inf")
        correct = neg_below + (n_pos - pos_below)
        if correct > best_correct:
            best_t, best_correct = t, correct
    return best_t


def threshold_accuracy(scores: Sequence[float], labels: Sequence[int], t: float) -> float:
    """Accuracy in percent of `label = 1 if score >= t else 0`."""
    hits = sum((s >= t) == (y == 1) for s, y in zip(scores, labels, strict=True))
    return 100.0 * hits / max(1, len(labels))


def _bins_fit(scores: list[float], labels: list[int], n_bins: int = 20) -> tuple[list, list]:
    """Multi-class: quantile bins of the overlap on train, each predicting its majority label."""
    qs = sorted(scores)
    edges = sorted({qs[int(len(qs) * k / n_bins)] for k in range(1, n_bins)})
    majority = []
    for b in range(len(edges) + 1):
        ys = [y for s, y in zip(scores, labels, strict=True) if _bin(s, edges) == b]
        majority.append(
            Counter(ys).most_common(1)[0][0] if ys else Counter(labels).most_common(1)[0][0]
        )
    return edges, majority


def _bin(score: float, edges: list[float]) -> int:
    return sum(score >= e for e in edges)


def word_overlap_accuracy(dm) -> dict[str, float]:
    """Fit on the training split, report val/test accuracy in percent.

    Two classes: one threshold on the Jaccard overlap (≥ t → label 1, "paraphrase").
    More classes (SNLI): 20 quantile bins of the overlap, each predicting its majority label.
    """
    dm.setup()
    a, b = dm.input_fields

    def scored(split: str) -> tuple[list[float], list[int]]:
        exs = dm.splits[split]
        return [jaccard(ex[a], ex[b]) for ex in exs], [int(ex["label"]) for ex in exs]

    train_s, train_y = scored("train")
    out: dict[str, float] = {}
    if dm.num_classes == 2:
        t = fit_threshold(train_s, train_y)
        for split, key in (("val", "val/acc"), ("test", "test/acc")):
            s, y = scored(split)
            out[key] = threshold_accuracy(s, y, t)
    else:
        edges, majority = _bins_fit(train_s, train_y)
        for split, key in (("val", "val/acc"), ("test", "test/acc")):
            s, y = scored(split)
            hits = sum(majority[_bin(si, edges)] == yi for si, yi in zip(s, y, strict=True))
            out[key] = 100.0 * hits / max(1, len(y))
    return out


def baseline(dm) -> dict[str, float]:
    """What the `full` gate prints beside BiMPM: {"val/acc": %, "test/acc": %}."""
    return word_overlap_accuracy(dm)
