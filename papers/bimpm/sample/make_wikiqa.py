"""Generate the shipped WikiQA-format sample: answer sentence selection where word overlap misleads.

Run from the project root:  python -m papers.bimpm.sample.make_wikiqa  [--out DIR] [--seed N]

Each question asks what a person can do with something in a city ("what can alice buy in paris
?"). Its candidate sentences (one "document" per question, as in WikiQA) state what someone can
do where, with the verb in any of its synonyms ("in paris , alice can procure cars ."). A
candidate answers the question when person, action and city all match; the distractors change one
of them, so most share nearly every word of the question. Questions without any correct answer
are written too (about one in ten), as WikiQA has them: the reader drops those, as the standard
WikiQA evaluation does. Words come from the Quora sample's vocabulary, so its vectors.txt covers
them.

Outputs (the WikiQA release's TSV with its header QuestionID, Question, DocumentID,
DocumentTitle, SentenceID, Sentence, Label): wikiqa/WikiQA-{train,dev,test}.tsv.
"""

from __future__ import annotations

import argparse
import random
from pathlib import Path

from papers.bimpm.sample.make_sample import CITIES, NAMES, OBJECTS, THING_VERBS

SEED = 20170214
SIZES = {"train": 400, "dev": 60, "test": 60}  # questions; 5 candidate sentences each
CANDIDATES = 5
NO_ANSWER = 0.1  # questions whose document holds no answer (dropped by the reader)
HEADER = "QuestionID\tQuestion\tDocumentID\tDocumentTitle\tSentenceID\tSentence\tLabel"


def sentence(rng: random.Random, agent: str, verb: str, obj: str, city: str) -> str:
    word = rng.choice(THING_VERBS[verb])
    things = rng.choice(OBJECTS[obj])
    if rng.random() < 0.5:
        return f"in {city} , {agent} can {word} {things} ."
    return f"{agent} can {word} {things} in {city} ."


def distractor(rng: random.Random, frame: tuple[str, str, str, str]) -> tuple[str, str, str, str]:
    """The frame with one slot changed: another person, action or city (the object may vary
    too: the question does not name it)."""
    agent, verb, obj, city = frame
    slot = rng.randrange(3)
    if slot == 0:
        agent = rng.choice([n for n in NAMES if n != agent])
    elif slot == 1:
        verb = rng.choice([v for v in THING_VERBS if v != verb])
    else:
        city = rng.choice([c for c in CITIES if c != city])
    return agent, verb, rng.choice(list(OBJECTS)), city


def question_rows(rng: random.Random, split: str, i: int) -> list[str]:
    agent, verb, city = rng.choice(NAMES), rng.choice(list(THING_VERBS)), rng.choice(CITIES)
    frame = (agent, verb, rng.choice(list(OBJECTS)), city)
    question = f"what can {agent} {rng.choice(THING_VERBS[verb])} in {city} ?"
    answers = 0 if rng.random() < NO_ANSWER else rng.choice((1, 1, 2))
    frames = [(agent, verb, rng.choice(list(OBJECTS)), city) for _ in range(answers)]
    frames += [distractor(rng, frame) for _ in range(CANDIDATES - answers)]
    rng.shuffle(frames)
    qid, doc = f"Q{split}{i}", f"D{split}{i}"
    rows = []
    for k, f in enumerate(frames):
        label = int(f[0] == agent and f[1] == verb and f[3] == city)
        rows.append(f"{qid}\t{question}\t{doc}\t{city}\t{doc}-{k}\t{sentence(rng, *f)}\t{label}")
    return rows


def main(out: Path | None = None, seed: int = SEED) -> dict[str, int]:
    out = out or Path(__file__).parent / "wikiqa"
    out.mkdir(parents=True, exist_ok=True)
    rng = random.Random(seed)
    counts = {}
    for split, n in SIZES.items():
        rows = [r for i in range(n) for r in question_rows(rng, split, i)]
        (out / f"WikiQA-{split}.tsv").write_text("\n".join([HEADER, *rows]) + "\n")
        counts[split] = len(rows)
    return counts


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=None, help="folder (default: sample/wikiqa/)")
    ap.add_argument("--seed", type=int, default=SEED)
    args = ap.parse_args()
    print(main(args.out, args.seed))
