"""BiMPM's readers: Quora (the authors' partition), SNLI 1.0, WikiQA and the shipped samples ->
raw examples {"p": tokens, "q": tokens, "label", "id"[, "group"]}, and the files `repro predict`
reads.

Malformed input is a DataError `<file>:<line>: expected ..., found ...; what to do`; lines that
are skipped on purpose (blank, SNLI no-consensus "-", empty pairs with data.empty=drop) are
counted per reason, and the data gate prints them (the datamodule's stats()).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from repro.data.download import compressed_format
from repro.errors import DataError

SNLI_LABELS = ("entailment", "neutral", "contradiction")
QUORA_LABELS = ("not paraphrase", "paraphrase")  # the TSV's label column: 0, 1
WIKIQA_LABELS = ("not an answer", "answer")  # the TSV's Label column: 0, 1
WIKIQA_FILES = {"train": "WikiQA-train.tsv", "val": "WikiQA-dev.tsv", "test": "WikiQA-test.tsv"}
WIKIQA_COLUMNS = ("QuestionID", "Question", "Sentence", "Label")  # of the release's 7 columns


# ---- the training files ------------------------------------------------------------------
def lines(path: Path) -> Iterator[tuple[int, str]]:
    """(line number, text) of a UTF-8 text file; unreadable, compressed, undecodable or NUL
    bytes -> DataError naming the file and line."""
    try:
        fh = open(path, "rb")
    except IsADirectoryError:
        raise DataError(
            f"{path}: expected a text file, found a directory; point at the file inside it"
        ) from None
    except OSError as e:
        raise DataError(
            f"{path}: expected a readable text file, found {e.strerror or e}; "
            "check the path and its permissions"
        ) from None
    with fh:
        for lineno, raw in enumerate(fh, start=1):
            if lineno == 1 and (kind := compressed_format(raw[:4])):
                raise DataError(
                    f"{path}: expected a UTF-8 text file, found {kind} data; "
                    f"{'gunzip' if kind == 'gzip' else 'unzip'} it first"
                )
            try:
                text = raw.decode("utf-8").rstrip("\r\n")
            except UnicodeDecodeError as e:  # before the NUL check: UTF-16 fails here, clearer
                raise DataError(
                    f"{path}:{lineno}: expected UTF-8 text, found byte {raw[e.start]:#04x} at "
                    f"column {e.start + 1}; re-save the file as UTF-8"
                ) from None
            if "\x00" in text:  # valid UTF-8, but no text has it: a binary or damaged file
                column = raw.find(b"\x00") + 1
                raise DataError(
                    f"{path}:{lineno}: expected text, found a NUL byte at column {column}; "
                    "the file is binary or damaged: re-extract or re-download it"
                )
            if lineno == 1:
                text = text.removeprefix("\ufeff")  # a byte-order mark some editors write
            yield lineno, text


def json_kind(v: Any) -> str:
    """A JSON value as a message names it: null, true, the number 4, a list, 'text'."""
    if v is None:
        return "null"
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int | float):
        return f"the number {v}"
    if isinstance(v, str):
        return repr(v[:40])
    return "a list" if isinstance(v, list) else "an object"


def tokenize_rows(path, rows, tokenize, empty: str) -> tuple[list[dict], int]:
    """rows: (lineno, label, s1, s2, id[, group]) -> (examples, pairs dropped for an empty
    sentence)."""
    p_toks = tokenize([r[2] for r in rows])
    q_toks = tokenize([r[3] for r in rows])
    out, dropped = [], 0
    for (lineno, label, _, _, ex_id, *group), p, q in zip(rows, p_toks, q_toks, strict=True):
        if not p or not q:
            if empty == "drop":
                dropped += 1
                continue
            which = "first" if not p else "second"
            raise DataError(
                f"{path}:{lineno}: expected text in both sentences, found an empty {which} "
                "sentence; fix the line or set data.empty=drop to skip such pairs"
            )
        out.append({"p": p, "q": q, "label": label, "id": ex_id, **_group(group)})
    return out, dropped


def _group(group: list[str]) -> dict[str, str]:
    return {"group": group[0]} if group else {}


def _require_pairs(path: Path, examples: list[dict], skipped: dict[str, int]) -> None:
    """An empty split would only fail later, inside a data loader (StopIteration, issue 14)."""
    if examples:
        return
    n = sum(skipped.values())
    reasons = ", ".join(f"{k} {v}" for k, v in skipped.items() if v)
    found = "an empty file" if n == 0 else f"no pairs ({n} lines skipped: {reasons})"
    raise DataError(
        f"{path}: expected at least one pair, found {found}; "
        "check that the file was copied or extracted completely"
    )


def read_quora(
    path: Path, tokenize, empty: str = "error"
) -> tuple[list[dict], dict[str, int], int]:
    """Headerless TSV `label \\t sentence1 \\t sentence2 \\t id` (the authors' Quora partition).

    Returns the examples, the lines skipped per reason (blank, empty_pair) and the lines read
    (the data gate checks examples + skipped = read)."""
    rows, skipped = [], {"blank": 0, "empty_pair": 0}
    lineno = 0
    for lineno, line in lines(path):
        if not line.strip():
            skipped["blank"] += 1  # blank (e.g. trailing) lines hold no pair
            continue
        cols = line.split("\t")
        if len(cols) != 4:
            raise DataError(
                f"{path}:{lineno}: expected 4 tab-separated columns (label, sentence1, sentence2, "
                f"id), found {len(cols)}; fix or remove the line"
            )
        if cols[0] not in ("0", "1"):
            raise DataError(
                f"{path}:{lineno}: expected label 0 or 1 in column 1, found {cols[0][:40]!r}; "
                "fix the label"
            )
        rows.append((lineno, int(cols[0]), cols[1], cols[2], cols[3]))
    examples, skipped["empty_pair"] = tokenize_rows(path, rows, tokenize, empty)
    _require_pairs(path, examples, skipped)
    return examples, skipped, lineno


def read_snli(path: Path, tokenize, empty: str = "error") -> tuple[list[dict], dict[str, int], int]:
    """SNLI 1.0 JSON lines; pairs whose gold_label is "-" (no consensus) are dropped.

    Returns the examples, the lines skipped per reason (blank, no_consensus, empty_pair) and the lines read
    (the data gate checks examples + skipped = read)."""
    rows, skipped = [], {"blank": 0, "no_consensus": 0, "empty_pair": 0}
    lineno = 0
    for lineno, line in lines(path):
        if not line.strip():
            skipped["blank"] += 1
            continue
        obj = _json_line(path, lineno, line)
        if not isinstance(obj, dict):
            raise DataError(
                f"{path}:{lineno}: expected a JSON object per line, found {json_kind(obj)}; "
                "fix or remove the line"
            )
        missing = [k for k in ("gold_label", "sentence1", "sentence2") if k not in obj]
        if missing:
            raise DataError(
                f"{path}:{lineno}: expected keys gold_label, sentence1, sentence2, found an "
                f"object without {', '.join(missing)}; fix or remove the line"
            )
        gold = obj["gold_label"]
        if gold == "-":
            skipped["no_consensus"] += 1
            continue
        if not isinstance(gold, str) or gold not in SNLI_LABELS:
            raise DataError(
                f"{path}:{lineno}: expected gold_label {', '.join(SNLI_LABELS)} or '-', found "
                f"{json_kind(gold)}; fix the label"
            )
        for key in ("sentence1", "sentence2"):
            text = obj[key]
            if not isinstance(text, str):
                raise DataError(
                    f"{path}:{lineno}: expected {key} to be a string, found {json_kind(text)}; "
                    "fix or remove the line"
                )
            if "\x00" in text:  # JSON "\u0000": the raw-byte check in _lines misses it
                raise DataError(
                    f"{path}:{lineno}: expected text in {key}, found a NUL character; "
                    "fix or remove the line"
                )
        ex_id = str(obj.get("pairID", lineno))
        rows.append((lineno, SNLI_LABELS.index(gold), obj["sentence1"], obj["sentence2"], ex_id))
    examples, skipped["empty_pair"] = tokenize_rows(path, rows, tokenize, empty)
    _require_pairs(path, examples, skipped)
    return examples, skipped, lineno


def read_wikiqa(
    path: Path, tokenize, empty: str = "error"
) -> tuple[list[dict], dict[str, int], int]:
    """The WikiQA release's TSV (a header naming QuestionID, Question, ..., Sentence, Label); one
    example per (question, candidate sentence), its "group" the QuestionID. Questions without a
    correct answer are dropped, as the standard WikiQA evaluation drops them (MAP and MRR cannot
    score them).

    Returns the examples, the lines skipped per reason (blank, no_answer, empty_pair) and the lines read
    (the data gate checks examples + skipped = read)."""
    rows, skipped = [], {"blank": 0, "no_answer": 0, "empty_pair": 0}
    where: dict[str, int] = {}
    lineno = 0
    for lineno, line in lines(path):
        cols = line.split("\t")
        if lineno == 1:
            missing = [c for c in WIKIQA_COLUMNS if c not in cols]
            if missing:
                raise DataError(
                    f"{path}:1: expected a header naming {', '.join(WIKIQA_COLUMNS)} (the WikiQA "
                    f"release's TSV), found no column {', '.join(missing)}; use the files of "
                    "WikiQACorpus.zip"
                )
            where = {c: cols.index(c) for c in (*WIKIQA_COLUMNS, "SentenceID") if c in cols}
            continue
        if not line.strip():
            skipped["blank"] += 1
            continue
        if len(cols) < len(where) or len(cols) <= max(where.values()):
            raise DataError(
                f"{path}:{lineno}: expected {max(where.values()) + 1} tab-separated columns as "
                f"the header names, found {len(cols)}; fix or remove the line"
            )
        label = cols[where["Label"]]
        if label not in ("0", "1"):
            raise DataError(
                f"{path}:{lineno}: expected Label 0 or 1, found {label[:40]!r}; fix the label"
            )
        ex_id = cols[where["SentenceID"]] if "SentenceID" in where else str(lineno)
        q, s = cols[where["Question"]], cols[where["Sentence"]]
        rows.append((lineno, int(label), q, s, ex_id, cols[where["QuestionID"]]))
    answered = {r[5] for r in rows if r[1] == 1}
    skipped["no_answer"] = sum(r[5] not in answered for r in rows)
    rows = [r for r in rows if r[5] in answered]
    examples, skipped["empty_pair"] = tokenize_rows(path, rows, tokenize, empty)
    _require_pairs(path, examples, skipped)
    return examples, skipped, max(lineno - 1, 0)  # the header is no record


READERS = {"quora": read_quora, "sample": read_quora, "snli": read_snli}
READERS |= {"wikiqa": read_wikiqa, "wikiqa_sample": read_wikiqa}


def read_unlabelled_wikiqa(path: Path, tokenize, empty: str) -> list[dict]:
    """WikiQA-format TSV without the Label column: every (question, sentence) pair, none dropped."""
    rows: list[tuple] = []
    where: dict[str, int] = {}
    for lineno, line in lines(path):
        cols = line.split("\t")
        if lineno == 1:
            missing = [c for c in ("QuestionID", "Question", "Sentence") if c not in cols]
            if missing:
                raise DataError(
                    f"{path}:1: expected a header naming QuestionID, Question, Sentence (the "
                    f"WikiQA release's TSV), found no column {', '.join(missing)}"
                )
            where = {
                c: cols.index(c)
                for c in ("QuestionID", "Question", "Sentence", "SentenceID")
                if c in cols
            }
            continue
        if not line.strip():
            continue
        if len(cols) <= max(where.values()):
            raise DataError(
                f"{path}:{lineno}: expected {max(where.values()) + 1} tab-separated columns as "
                f"the header names, found {len(cols)}; fix or remove the line"
            )
        ex_id = cols[where["SentenceID"]] if "SentenceID" in where else str(lineno)
        rows.append(
            (
                lineno,
                None,
                cols[where["Question"]],
                cols[where["Sentence"]],
                ex_id,
                cols[where["QuestionID"]],
            )
        )
    return tokenize_rows(path, rows, tokenize, empty)[0]


# ---- the files `repro predict` reads ------------------------------------------------------------
def read_inputs(
    path: Path, dataset: str, tokenize, empty: str, class_names: list[str]
) -> list[dict]:
    """Sentence pairs to predict, labels optional, tokenized as the training data was:
    - a TSV as the training files: Quora's `label, sentence1, sentence2, id` (read by the
      training reader itself), or unlabelled `sentence1, sentence2[, id]`; WikiQA's release
      TSV with its header (Label optional: without it, no question is dropped);
    - JSON lines: SNLI's (read by the training reader when every line has a gold_label), or
      {"sentence1", "sentence2"} with optional "label" (an index or a class name) and "id"
      (and "group" for answer selection)."""
    first = next((line for _, line in lines(path) if line.strip()), None)
    if first is None:
        raise DataError(f"{path}: expected sentence pairs to predict, found an empty file")
    if first.lstrip().startswith("{"):
        return _read_json_inputs(path, dataset, tokenize, empty, class_names)
    if dataset in ("wikiqa", "wikiqa_sample"):
        if "Label" in first.split("\t"):
            return read_wikiqa(path, tokenize, empty)[0]
        return read_unlabelled_wikiqa(path, tokenize, empty)
    rows = [(n, line.split("\t")) for n, line in lines(path) if line.strip()]
    if all(len(cols) == 4 and cols[0] in ("0", "1") for _, cols in rows):
        return read_quora(path, tokenize, empty)[0]  # the training reader, as it is
    unlabelled = []
    for lineno, cols in rows:
        if len(cols) not in (2, 3):
            raise DataError(
                f"{path}:{lineno}: expected sentence1, sentence2[, id] (tab-separated) or "
                f"label, sentence1, sentence2, id on every line, found {len(cols)} columns; "
                "fix or remove the line"
            )
        unlabelled.append(
            (lineno, None, cols[0], cols[1], cols[2] if len(cols) == 3 else str(lineno))
        )
    return tokenize_rows(path, unlabelled, tokenize, empty)[0]


def _read_json_inputs(
    path: Path, dataset: str, tokenize, empty: str, class_names: list[str]
) -> list[dict]:
    objects = []
    for lineno, line in lines(path):
        if not line.strip():
            continue
        obj = _json_line(path, lineno, line)
        if not isinstance(obj, dict) or not all(
            isinstance(obj.get(k), str) for k in ("sentence1", "sentence2")
        ):
            raise DataError(
                f"{path}:{lineno}: expected an object with the strings sentence1 and "
                f"sentence2, found {json_kind(obj)}; fix or remove the line"
            )
        objects.append((lineno, obj))
    if dataset == "snli" and all("gold_label" in o for _, o in objects):
        return read_snli(path, tokenize, empty)[0]  # the training reader, as it is
    rows = []
    for lineno, obj in objects:
        label = obj.get("label")
        if isinstance(label, str):
            if label not in class_names:
                raise DataError(
                    f"{path}:{lineno}: expected label to be one of {class_names} (or "
                    f"its index), found {label[:40]!r}; fix the label"
                )
            label = class_names.index(label)
        group = [str(obj["group"])] if obj.get("group") is not None else []
        rows.append(
            (
                lineno,
                label,
                obj["sentence1"],
                obj["sentence2"],
                str(obj.get("id", lineno)),
                *group,
            )
        )
    return tokenize_rows(path, rows, tokenize, empty)[0]


def _json_line(path: Path, lineno: int, line: str):
    """One line of a JSON-lines file, parsed; a DataError naming the file and line when it is not
    JSON."""
    try:
        return json.loads(line)
    except json.JSONDecodeError as e:
        raise DataError(
            f"{path}:{lineno}: expected a JSON object per line, found invalid JSON "
            f"({e.msg} at column {e.colno}); fix or remove the line"
        ) from None
