"""Generate the shipped sample: a synthetic paraphrase task where word overlap is a poor guide.

Run from the project root:  python -m papers.bimpm.sample.make_sample  [--out DIR] [--seed N]

Every question realises a *frame* (agent, action, object, city, negation). A pair is a paraphrase
(label 1) when both questions realise the same frame, and a non-paraphrase (label 0) when one slot
differs: another person, number, city, object or action, an added "not", or agent and patient
swapped ("alice calls bob" vs "bob calls alice"). Almost independently of the label (HEAVY_REPHRASE),
the second question is either a light edit of the first (same template, one synonym changed) or a heavy rephrase
(another template, synonyms resampled). So paraphrases can share few words and non-paraphrases
most of them: Jaccard overlap barely separates the classes, while a model that matches words by
meaning (synonyms have nearby vectors in vectors.txt) and order can.

Outputs (Quora partition format, headerless `label \\t q1 \\t q2 \\t id`):
  train.tsv (4000), dev.tsv (500), test.tsv (500), balanced; vectors.txt (GloVe text format, 50-d,
  no header; three vocabulary words are left out on purpose to exercise OOV handling);
  snli/snli_1.0_{train,dev,test}.jsonl (a few dozen SNLI-format lines each, some with gold "-").
"""

from __future__ import annotations

import argparse
import json
import random
from pathlib import Path

SEED = 20170214  # arXiv submission date of the paper; any fixed number would do
SIZES = {"train": 4000, "dev": 500, "test": 500}
DIM = 50
LEFT_OUT_OF_VECTORS = ("procure", "refurbish", "ingrid")  # exercise "vocab word without vector"
EVAL_ONLY_NAMES = ("zelda", "quincy", "ximena")  # appear only in dev/test: OOV at evaluation
# P(heavy rephrase | label): slightly more often for non-paraphrases, so overlap carries a
# little signal (the baseline lands near 60%, not at chance) but far from all of it.
HEAVY_REPHRASE = {0: 0.6, 1: 0.4}

NAMES = (
    "alice bob carol dave erin frank grace heidi ivan judy mallory nina oscar peggy rupert sybil "
    "trent victor walter yusuf amara bruno chloe diego elena farid greta hugo ingrid jonas kenji "
    "lena marco nadia omar priya"
).split()
CITIES = (
    "paris london tokyo berlin madrid rome lisbon dublin oslo vienna prague warsaw cairo lagos "
    "nairobi lima bogota quito toronto chicago boston denver seattle sydney mumbai delhi seoul"
).split()
# concept -> synonyms (every word belongs to one concept only)
THING_VERBS = {
    "buy": ["buy", "purchase", "procure"],
    "sell": ["sell", "vend", "auction"],
    "fix": ["fix", "repair", "refurbish"],
    "build": ["build", "construct", "assemble"],
    "find": ["find", "locate", "discover"],
    "rent": ["rent", "lease"],
    "clean": ["clean", "wash", "scrub"],
    "borrow": ["borrow", "loan"],
    "paint": ["paint", "decorate"],
    "order": ["order", "request"],
}
PERSON_VERBS = {
    "meet": ["meet", "see", "visit"],
    "call": ["call", "ring", "telephone"],
    "help": ["help", "assist", "aid"],
    "hire": ["hire", "employ", "recruit"],
    "pay": ["pay", "reimburse", "compensate"],
    "teach": ["teach", "tutor", "instruct"],
    "thank": ["thank", "acknowledge"],
    "email": ["email", "message", "contact"],
}
OBJECTS = {
    "car": ["cars", "automobiles", "vehicles"],
    "house": ["houses", "homes", "dwellings"],
    "phone": ["phones", "cellphones", "mobiles"],
    "book": ["books", "novels", "volumes"],
    "laptop": ["laptops", "notebooks", "computers"],
    "bike": ["bikes", "bicycles", "cycles"],
    "shoe": ["shoes", "sneakers", "trainers"],
    "ticket": ["tickets", "passes", "vouchers"],
    "boat": ["boats", "ships", "vessels"],
    "chair": ["chairs", "seats", "stools"],
    "lamp": ["lamps", "lights", "lanterns"],
    "guitar": ["guitars", "instruments"],
}
NUMBERS = {
    n: [w, str(n)]
    for n, w in zip(
        range(2, 13),
        "two three four five six seven eight nine ten eleven twelve".split(),
        strict=True,
    )
}
TEMPLATES = (
    "how can {A} {N}{V} {O} in {C} ?",
    "in {C} , how can {A} {N}{V} {O} ?",
    "what is the best way for {A} to {N}{V} {O} in {C} ?",
    "in {C} , what is the best way for {A} to {N}{V} {O} ?",
    "what should {A} do to {N}{V} {O} in {C} ?",
    "while in {C} , how does {A} {N}{V} {O} ?",
    "{A} wants to {N}{V} {O} in {C} . how ?",
    "is there a way for {A} to {N}{V} {O} when in {C} ?",
)


def new_frame(rng: random.Random, names: list[str]) -> dict:
    if rng.random() < 0.5:
        return {
            "kind": "thing",
            "agent": rng.choice(names),
            "verb": rng.choice(sorted(THING_VERBS)),
            "count": rng.choice(sorted(NUMBERS)),
            "obj": rng.choice(sorted(OBJECTS)),
            "city": rng.choice(CITIES),
            "neg": rng.random() < 0.2,
        }
    agent, patient = rng.sample(names, 2)
    return {
        "kind": "person",
        "agent": agent,
        "verb": rng.choice(sorted(PERSON_VERBS)),
        "patient": patient,
        "city": rng.choice(CITIES),
        "neg": rng.random() < 0.2,
    }


def perturb(rng: random.Random, f: dict, names: list[str]) -> dict:
    """The same frame with exactly one slot changed in meaning."""
    g = dict(f)
    slots = ["agent", "city", "neg", "verb"] + (
        ["count", "obj"] if f["kind"] == "thing" else ["patient", "swap", "swap"]
    )
    slot = rng.choice(slots)
    if slot == "neg":
        g["neg"] = not f["neg"]
    elif slot == "swap":
        g["agent"], g["patient"] = f["patient"], f["agent"]
    else:
        pool = {
            "agent": names,
            "patient": names,
            "city": CITIES,
            "verb": sorted(THING_VERBS if f["kind"] == "thing" else PERSON_VERBS),
            "count": sorted(NUMBERS),
            "obj": sorted(OBJECTS),
        }[slot]
        taken = {f["agent"], f.get("patient")}
        g[slot] = rng.choice([x for x in pool if x != f[slot] and x not in taken])
    return g


def new_choices(rng: random.Random) -> dict:
    """Surface choices: template and synonym indices (reduced modulo each synonym list)."""
    return {
        "t": rng.randrange(len(TEMPLATES)),
        "v": rng.randrange(6),
        "o": rng.randrange(6),
        "n": rng.randrange(6),
    }


def edit_choices(rng: random.Random, c: dict, heavy: bool) -> dict:
    if heavy:  # another template, every synonym resampled
        d = new_choices(rng)
        while d["t"] == c["t"]:
            d["t"] = rng.randrange(len(TEMPLATES))
        return d
    d = dict(c)  # light edit: same template, one synonym index moved
    key = rng.choice(["v", "o", "n"])
    d[key] = c[key] + rng.randrange(1, 3)
    return d


def realise(f: dict, c: dict) -> str:
    verbs = (THING_VERBS if f["kind"] == "thing" else PERSON_VERBS)[f["verb"]]
    if f["kind"] == "thing":
        nums, objs = NUMBERS[f["count"]], OBJECTS[f["obj"]]
        obj = f"{nums[c['n'] % len(nums)]} {objs[c['o'] % len(objs)]}"
    else:
        obj = f["patient"]
    return TEMPLATES[c["t"]].format(
        A=f["agent"], N="not " if f["neg"] else "", V=verbs[c["v"] % len(verbs)], O=obj, C=f["city"]
    )


def make_pairs(rng: random.Random) -> dict[str, list[tuple[int, str, str]]]:
    seen: set[tuple[str, str]] = set()
    out: dict[str, list[tuple[int, str, str]]] = {}
    train_names = [n for n in NAMES if n not in EVAL_ONLY_NAMES]
    eval_names = NAMES + list(EVAL_ONLY_NAMES)
    for split, size in SIZES.items():
        names = train_names if split == "train" else eval_names
        pairs: list[tuple[int, str, str]] = []
        while len(pairs) < size:
            label = len(pairs) % 2  # exactly balanced
            f = new_frame(rng, names)
            c = new_choices(rng)
            g = f if label == 1 else perturb(rng, f, names)
            heavy = rng.random() < HEAVY_REPHRASE[label]
            q1, q2 = realise(f, c), realise(g, edit_choices(rng, c, heavy))
            if q1 == q2 or (q1, q2) in seen:
                continue  # a light edit can land on the same word; never repeat a pair
            seen.update({(q1, q2), (q2, q1)})
            pairs.append((label, q1, q2))
        rng.shuffle(pairs)
        out[split] = pairs
    return out


def check_disjoint(splits: dict[str, list[tuple[int, str, str]]]) -> None:
    keys = {s: {frozenset((q1, q2)) for _, q1, q2 in ps} for s, ps in splits.items()}
    for s, t in (("train", "dev"), ("train", "test"), ("dev", "test")):
        both = keys[s] & keys[t]
        if both:
            raise RuntimeError(f"{len(both)} pairs occur in both {s} and {t}: {sorted(both)[:3]}")


def vector_lines(rng: random.Random) -> list[str]:
    """GloVe-format lines: synonyms share a centre (distance ~0.1 vs ~0.7 between concepts)."""
    groups: list[list[str]] = [[w] for w in NAMES + list(EVAL_ONLY_NAMES) + CITIES]
    for table in (THING_VERBS, PERSON_VERBS, OBJECTS, NUMBERS):
        groups += [list(ws) for _, ws in sorted(table.items())]
    words_in_templates = sorted({w for t in TEMPLATES for w in t.split() if "{" not in w})
    groups += [[w] for w in words_in_templates + ["not"]]
    groups += [[f"filler{i:03d}"] for i in range(200)]  # words the vocabulary will not need
    lines = []
    for group in groups:
        centre = [rng.gauss(0.0, 0.5) for _ in range(DIM)]
        for w in group:
            if w in LEFT_OUT_OF_VECTORS:
                continue
            vec = [x + rng.gauss(0.0, 0.1) for x in centre]
            lines.append(w + " " + " ".join(f"{x:.5f}" for x in vec))
    rng.shuffle(lines)
    return lines


def snli_lines(rng: random.Random, split: str, n: int) -> list[str]:
    """A few dozen SNLI-1.0-format JSON lines; every seventh has gold label "-" (no consensus)."""
    lines = []
    for i in range(n):
        f = new_frame(rng, NAMES)
        c = new_choices(rng)
        s1 = realise(f, c)
        label = ("entailment", "neutral", "contradiction")[i % 3]
        if label == "entailment":
            s2 = realise(f, edit_choices(rng, c, heavy=True))
        elif label == "contradiction":
            s2 = realise(dict(f, neg=not f["neg"]), c)
        else:
            s2 = realise(f, c)[:-2] + " next week ?"
        gold = "-" if i % 7 == 6 else label
        # SNLI sentences are raw text (capitalised, punctuation attached): tokenized by spaCy.
        row = {
            "annotator_labels": [label, label if gold != "-" else "neutral"],
            "captionID": f"sample{split}{i}",
            "gold_label": gold,
            "pairID": f"sample{split}{i}r{i % 3}",
            "sentence1": s1.replace(" ?", "?").replace(" ,", ",").capitalize(),
            "sentence2": s2.replace(" ?", "?").replace(" ,", ",").capitalize(),
        }
        lines.append(json.dumps(row))
    return lines


def main(out: Path | None = None, seed: int = SEED, verbose: bool = True) -> dict[str, float]:
    out = Path(out) if out is not None else Path(__file__).resolve().parent
    rng = random.Random(seed)
    splits = make_pairs(rng)
    check_disjoint(splits)
    out.mkdir(parents=True, exist_ok=True)
    for split, pairs in splits.items():
        with open(out / f"{split}.tsv", "w", encoding="utf-8", newline="\n") as fh:
            for i, (label, q1, q2) in enumerate(pairs):
                fh.write(f"{label}\t{q1}\t{q2}\t{split}-{i}\n")
    (out / "vectors.txt").write_text("\n".join(vector_lines(rng)) + "\n", encoding="utf-8")
    (out / "snli").mkdir(exist_ok=True)
    for split, n in (("train", 42), ("dev", 28), ("test", 28)):
        text = "\n".join(snli_lines(rng, split, n)) + "\n"
        (out / "snli" / f"snli_1.0_{split}.jsonl").write_text(text, encoding="utf-8")

    from papers.bimpm.baseline import fit_threshold, jaccard, threshold_accuracy

    def scored(pairs):
        return [jaccard(a.split(), b.split()) for _, a, b in pairs], [y for y, _, _ in pairs]

    t = fit_threshold(*scored(splits["train"]))
    acc = {s: threshold_accuracy(*scored(splits[s]), t) for s in ("train", "dev", "test")}
    if verbose:
        sizes = ", ".join(f"{s} {len(p)}" for s, p in splits.items())
        print(f"wrote {out}: {sizes} pairs")
        print(
            f"word-overlap baseline (Jaccard >= {t:.3f} -> paraphrase, fit on train): "
            f"train {acc['train']:.1f}%  dev {acc['dev']:.1f}%  test {acc['test']:.1f}%"
        )
    return acc


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument(
        "--out", type=Path, default=None, help="output folder (default: next to this file)"
    )
    ap.add_argument("--seed", type=int, default=SEED)
    args = ap.parse_args()
    main(args.out, args.seed)
