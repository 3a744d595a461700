"""`repro predict` and `repro eval` on a trained toy run: the same encode as training, the test
phase's outputs exactly, a run directory that works in another project, checkpoints that say why
they no longer fit, the recorded metrics exactly again."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from repro.init_project import init_project
from repro.project import Project
from repro.scaffold import scaffold_paper
from tests.configs import shrink_toy


def _repro(root: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "repro", *args], cwd=root, capture_output=True, text=True
    )


@pytest.fixture(scope="module")
def trained_root(tmp_path_factory) -> Path:
    """A project whose toy paper has one finished full run (300 examples, 2 epochs: ~10 s)."""
    root = tmp_path_factory.mktemp("trained")
    init_project(root)
    project = Project(root)
    scaffold_paper(project, "toy", "Toy", "0000.00000", "classification")
    shrink_toy(project)
    r = _repro(root, "stage", "full", "--force", "--paper", "toy")
    assert r.returncode in (0, 1), r.stderr
    return root


@pytest.fixture
def here(trained_root, tmp_path, monkeypatch, purge_papers) -> Path:
    """A copy of the trained project, as the working directory (tests may edit its code)."""
    root = tmp_path / "project"
    shutil.copytree(trained_root, root)
    monkeypatch.chdir(root)
    monkeypatch.setattr(sys, "path", list(sys.path))
    return root


def _run_dir(root: Path) -> Path:
    (run,) = (root / "runs" / "toy" / "full").iterdir()
    return run


class Vocab:
    """An object in a fitted state: torch.save pickles it, a weights-only load refuses it."""


def _probabilities(records: list[dict]) -> torch.Tensor:
    return torch.tensor([list(r["probabilities"].values()) for r in records], dtype=torch.float64)


def test_the_run_directory_holds_the_fitted_state_and_the_test_phase_outputs(here):
    run = _run_dir(here)
    state = torch.load(run / "fitted_state.pt", weights_only=True)
    assert state["format"] == 1 and state["class_names"] == ["a", "b", "c"]
    assert state["state"] == {}  # the toy fits nothing: its features are used as they are
    batches = torch.load(run / "test_outputs.pt", weights_only=True)["batches"]
    assert [b.shape for b in batches] == [(30, 3)]  # 10% of 300 examples, logits (B, C)
    record = json.loads((run / "record.json").read_text())
    (inv,) = record["metrics"]["invariances"]  # the template declares the nudge (learned)
    assert inv["transform"] == "nudge" and inv["exact"] is False
    assert inv["per_seed"][0]["n"] == 30 and 0 <= inv["per_seed"][0]["changed"] <= 1
    (check,) = [c for c in record["verdict"]["checks"] if c["name"] == "invariant to nudge"]
    assert "of the test predictions change under nudge" in check["reason"]


def test_predict_builds_training_tensors_and_gives_the_test_phase_outputs(here):
    from repro.inference import build_datamodule, full_run, load_trained
    from repro.predict import predict

    project = Project(here)
    run = full_run(project, _run_dir(here).name)
    trained = load_trained(project, run)
    assert trained.fitted.endswith("fitted_state.pt")
    # what the training loader served for the test split, built the way training built it
    ctx_dm = build_datamodule(project, run, trained.package, "current", trained.config, 0)
    ctx_dm.setup("fit")
    examples = trained.dm.load_splits()["test"]
    for i, ex in enumerate(examples):
        mine = trained.dm.encode(trained.task.placeholder_label(ex))
        theirs = ctx_dm.datasets["test"][i]
        assert mine.keys() == theirs.keys()
        for k in mine:
            assert torch.equal(mine[k], theirs[k]), (i, k)
    records = predict(trained, examples)
    logits = torch.cat(torch.load(run.dir / "test_outputs.pt", weights_only=True)["batches"])
    gap = (_probabilities(records) - torch.softmax(logits.double(), -1)).abs().max()
    assert float(gap) == 0.0  # the same batches through the same model: bit for bit
    assert [r["n"] for r in records] == list(range(1, 31))
    assert {r["prediction"] for r in records} <= {"a", "b", "c"}


def test_predict_cli_reads_the_papers_input_format_and_writes_jsonl_or_tsv(here, cli):
    run = _run_dir(here).name
    examples = [{"x": [0.1 * i] * 16} for i in range(5)]  # no labels: predict needs none
    (here / "in.jsonl").write_text("".join(json.dumps(e) + "\n" for e in examples))
    code, out, err = cli("predict", run, "--input", "in.jsonl")
    assert code == 0, err
    lines = [json.loads(line) for line in out.splitlines()]
    assert len(lines) == 5 and "label" not in lines[0]
    assert set(lines[0]) == {"n", "prediction", "probabilities"}
    assert sum(lines[0]["probabilities"].values()) == pytest.approx(1.0, abs=1e-12)
    assert f"run {run}, seed 0, best.ckpt (current code): 5 predictions of in.jsonl" in err
    code, out, err = cli("predict", run, "--input", "in.jsonl", "-o", "out.tsv")
    assert code == 0, err
    rows = (here / "out.tsv").read_text().splitlines()
    assert rows[0].split("\t") == [
        "n",
        "prediction",
        "probabilities.a",
        "probabilities.b",
        "probabilities.c",
    ]
    assert len(rows) == 6 and rows[1].split("\t")[1] == lines[0]["prediction"]


def test_predict_refuses_bad_input_in_one_line(here, cli):
    run = _run_dir(here).name
    (here / "bad.jsonl").write_text('{"x": [1.0]}\n[1, 2]\n')
    code, _, err = cli("predict", run, "--input", "bad.jsonl")
    assert code == 1
    assert err.strip() == (
        "Error: bad.jsonl:2: expected a JSON object per line (one raw example), found list; fix "
        "or remove the line"
    )
    code, _, err = cli("predict", run)
    assert code == 1 and "expected --input FILE (or - for standard input) or --split" in err
    code, _, err = cli("predict", run, "--input", "missing.tsv")
    assert code == 1 and "--input missing.tsv: expected a file of examples" in err


@pytest.mark.slow  # ~17 s: a fresh project's imports and a second predict
def test_a_run_directory_copied_into_a_fresh_project_predicts_the_same(here, tmp_path, cli):
    run = _run_dir(here)
    code, before, err = cli("predict", run.name, "--split", "test")
    assert code == 0, err
    examples = [json.dumps({"x": [0.05 * i] * 16}) for i in range(7)]
    (tmp_path / "in.jsonl").write_text("\n".join(examples) + "\n")
    code, want, err = cli("predict", run.name, "--input", str(tmp_path / "in.jsonl"))
    assert code == 0, err

    fresh = tmp_path / "fresh"
    init_project(fresh)  # repro init: no paper config, no data
    shutil.copytree(here / "papers" / "toy", fresh / "papers" / "toy")  # the paper's code only
    shutil.copytree(run, fresh / "runs" / "toy" / "full" / run.name)
    r = _repro(fresh, "predict", run.name, "--input", str(tmp_path / "in.jsonl"))
    assert r.returncode == 0, r.stderr
    assert r.stdout == want
    assert "fitted state: runs/toy/full/" in r.stderr

    bare = tmp_path / "bare"  # not even the paper's code: the run's own snapshot
    init_project(bare)
    shutil.copytree(run, bare / "runs" / "toy" / "full" / run.name)
    r = _repro(bare, "predict", run.name, "--input", str(tmp_path / "in.jsonl"))
    assert r.returncode == 1 and "run with --code recorded" in r.stderr
    r = _repro(
        bare, "predict", run.name, "--input", str(tmp_path / "in.jsonl"), "--code", "recorded"
    )
    assert r.returncode == 0, r.stderr
    assert r.stdout == want


def test_a_renamed_parameter_is_named_in_one_line_and_code_recorded_still_loads(here, cli):
    run = _run_dir(here).name
    model_py = here / "papers" / "toy" / "model.py"
    text = model_py.read_text()
    assert "self.net = nn.Sequential(" in text and "return self.net(x)" in text
    model_py.write_text(
        text.replace("self.net = nn.Sequential(", "self.layers = nn.Sequential(").replace(
            "return self.net(x)", "return self.layers(x)"
        )
    )
    code, out, err = cli("predict", run, "--split", "test")
    assert code == 1 and out == ""
    (line,) = err.strip().splitlines()
    assert line.startswith(f"Error: runs/toy/full/{run}/checkpoints/best.ckpt: expected the ")
    assert "missing in the checkpoint: layers.0.bias, layers.0.weight, layers.3.bias" in line
    assert "unexpected (not in the model): net.0.bias, net.0.weight" in line
    assert f"changed since run {run}: papers/toy/model.py" in line
    assert "run with --code recorded to rebuild the model from the run's code snapshot" in line
    code, out, err = cli("predict", run, "--split", "test", "--code", "recorded")
    assert code == 0, err
    assert len(out.splitlines()) == 30


def test_a_misshaped_parameter_is_named_with_both_shapes(here, cli):
    from repro.train.evaluate import CheckpointMismatch, load_weights

    ckpt = _run_dir(here) / "checkpoints" / "best.ckpt"
    model = torch.nn.Sequential(
        torch.nn.Linear(16, 8), torch.nn.ReLU(), torch.nn.Dropout(), torch.nn.Linear(8, 3)
    )
    wrapped = torch.nn.Module()
    wrapped.net = model
    with pytest.raises(CheckpointMismatch) as e:
        load_weights(wrapped, ckpt)
    assert e.value.missing == [] and e.value.unexpected == []
    assert "mis-shaped: net.0.bias (checkpoint (64,), model (8,))" in str(e.value)


def test_eval_reproduces_the_recorded_test_metrics_exactly_as_a_linked_record(here, cli):
    run = _run_dir(here)
    code, out, err = cli("eval", run.name, "test")
    assert code == 0, out + err
    (new,) = (here / "runs" / "toy" / "eval").iterdir()
    record = json.loads((new / "record.json").read_text())
    assert record["links"] == {"evaluated": run.name} and record["status"] == "passed"
    full = json.loads((run / "record.json").read_text())
    recorded = {k: v for k, v in full["metrics"]["per_seed"][0].items() if k.startswith("test/")}
    assert record["metrics"]["per_seed"] == [recorded]  # exactly: equal floats
    assert record["metrics"]["recorded"] == [recorded]
    assert (new / "code" / "model.py").is_file() and (new / "config.yaml").is_file()
    assert "identical to run" in out and "same" in out
    code, out, _ = cli("log")
    assert "eval" in out and new.name in out  # listed with the gate runs; status is unchanged
    code, out, err = cli("log", "-s", "eval")
    assert code == 0 and new.name in out, err
    assert not [ln for ln in out.splitlines() if "│ full " in ln]  # the eval runs only
    code, out, _ = cli("show", new.name)
    assert code == 0 and f"links: {{'evaluated': '{run.name}'}}" in out


def test_eval_after_a_change_to_the_code_shows_what_changed(here, cli):
    run = _run_dir(here).name
    data_py = here / "papers" / "toy" / "data.py"
    text = data_py.read_text()
    old = 'return {"x": torch.tensor(example["x"]), "label": torch.tensor(example["label"])}'
    assert old in text
    data_py.write_text(text.replace(old, old.replace('example["x"])', 'example["x"]) * 3')))
    code, out, err = cli("eval", run, "test")
    assert code == 1, out + err
    assert "the numbers changed; changed since run" in out and "papers/toy/data.py" in out
    (new,) = (here / "runs" / "toy" / "eval").iterdir()
    record = json.loads((new / "record.json").read_text())
    assert record["status"] == "failed"
    assert record["metrics"]["code_changed"] == ["papers/toy/data.py"]
    assert (
        record["metrics"]["per_seed"][0]["test/loss"]
        != record["metrics"]["recorded"][0]["test/loss"]
    )


def test_eval_on_other_data_and_refusals(here, cli):
    run = _run_dir(here).name
    code, out, err = cli("eval", run, "val", "data.noise=0.5")  # the same split of other data
    assert code == 0, out + err
    records = [json.loads(p.read_text()) for p in here.glob("runs/toy/eval/*/record.json")]
    (record,) = records
    assert record["metrics"]["recorded"] is None and record["overrides"] == ["data.noise=0.5"]
    assert record["config"]["data"]["noise"] == 0.5
    code, out, err = cli("eval", run, "test", "--checkpoint", "last")
    assert code == 0, out + err  # the run recorded the best checkpoint's numbers: no comparison
    assert "as recorded" not in out and "metrics finite" in out
    code, _, err = cli("eval", run, "test", "model.hidden=8")
    assert code == 1
    assert "expected data.<key>=<value> (evaluating a trained model may change its data" in err
    code, _, err = cli("eval", run, "dev")
    assert code == 1 and "split 'dev': expected one of train, val, test" in err
    (here / "unlabelled.jsonl").write_text('{"x": [0.0]}\n')
    code, _, err = cli("eval", run, "--input", "unlabelled.jsonl")
    assert code == 1 and "unlabelled.jsonl: example 1: expected an integer 'label'" in err


def test_predict_and_eval_help(cli):
    code, out, _ = cli("predict", "--help")
    assert code == 0
    for option in (
        "--input",
        "--split",
        "--output",
        "--format",
        "--seed",
        "--code",
        "--checkpoint",
    ):
        assert option in out
    assert "the encode that training used" in " ".join(out.replace("│", " ").split())
    code, out, _ = cli("eval", "--help")
    assert code == 0
    for word in ("split", "overrides", "--input", "--code", "--checkpoint", "linked"):
        assert word in out


def test_standard_input_and_a_run_without_fitted_state(here, cli, monkeypatch):
    import io

    run = _run_dir(here)
    text = "".join(json.dumps({"x": [0.2 * i] * 16}) + "\n" for i in range(4))
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(text.encode())))
    code, from_stdin, err = cli("predict", run.name, "--input", "-")
    assert code == 0, err
    assert "4 predictions of -" in err and len(from_stdin.splitlines()) == 4
    (run / "fitted_state.pt").unlink()  # as a paper without fitted_state(), or an older repro
    (here / "in.jsonl").write_text(text)
    code, rebuilt, err = cli("predict", run.name, "--input", "in.jsonl")
    assert code == 0, err
    assert rebuilt == from_stdin
    assert "fitted state: rebuilt from the training data (the run holds no fitted_state.pt" in err


def test_a_fitted_state_that_is_not_plain_data_is_refused_naming_the_method(tmp_path):
    from repro.data.datamodule import PaperDataModule
    from repro.errors import PaperError
    from repro.train.fitted_state import save_fitted_state
    from tests.configs import data_config

    class Pickled(PaperDataModule):
        def fitted_state(self):
            return {"vocab": Vocab()}

    with pytest.raises(PaperError) as e:
        save_fitted_state(Pickled(data_config(), 0), tmp_path)
    assert str(e.value).startswith("Pickled.fitted_state(): expected plain data (tensors, strings")
    assert "return plain values" in str(e.value)
    assert not (tmp_path / "fitted_state.pt").exists()


@pytest.mark.slow  # ~30 s: trains two seeds
def test_predict_and_eval_each_seed_of_a_run_with_several(tmp_path, cli, monkeypatch, purge_papers):
    root = tmp_path / "seeds"
    init_project(root)
    project = Project(root)
    scaffold_paper(project, "toy", "Toy", "0000.00000", "classification")
    shrink_toy(project)
    r = _repro(root, "stage", "full", "--force", "--paper", "toy", "seeds=2")
    assert r.returncode in (0, 1), r.stderr
    monkeypatch.chdir(root)
    run = _run_dir(root)
    assert (run / "seed_0" / "fitted_state.pt").is_file()
    assert (run / "seed_1" / "test_outputs.pt").is_file()
    outs = {}
    for seed in (0, 1):
        code, outs[seed], err = cli("predict", run.name, "--split", "test", "--seed", str(seed))
        assert code == 0, err
        logits = torch.load(run / f"seed_{seed}" / "test_outputs.pt", weights_only=True)
        probs = torch.softmax(torch.cat(logits["batches"]).double(), -1)
        records = [json.loads(line) for line in outs[seed].splitlines()]
        assert float((_probabilities(records) - probs).abs().max()) == 0.0
    assert outs[0] != outs[1]  # two models
    code, _, err = cli("predict", run.name, "--split", "test", "--seed", "7")
    assert code == 1 and "--seed 7: expected a seed run" in err and "(0, 1)" in err
    code, out, err = cli("eval", run.name, "test")
    assert code == 0, out + err
    assert "as recorded (seed 0)" in out and "as recorded (seed 1)" in out


def test_the_code_changed_since_a_run_is_its_modules_not_data_beside_them():
    from repro.inference import is_code_file

    assert is_code_file("papers/bimpm/model.py") and is_code_file("papers/toy/data.py")
    assert not is_code_file("papers/bimpm/sample/train.tsv")  # BiMPM's sample: data
    assert not is_code_file("papers/bimpm/sample/make_sample.py")  # not the paper's modules
    assert not is_code_file("data/quora/train.tsv")
