"""``contractive reproduce rifai2011``: the pipeline end to end on a small subset (the
number itself is the README's, from the full run), resuming, and its refusals."""

import json
import os

import pytest

from contractive import ContractiveAutoencoder
from contractive.cli import main
from contractive.reproduce import FAMILIES, Experiment, Protocol, configurations

MNIST_DIR = os.path.normpath(os.path.join(os.path.dirname(__file__), "..", "..", "shared",
                                          "data", "mnist"))
needs_mnist = pytest.mark.skipif(not os.path.isdir(MNIST_DIR), reason="no MNIST files here")


def test_configurations_follow_the_selection_order():
    p = Protocol()
    first = configurations(p)
    assert [c["family"] for c in first] == ["CAE"] * 2 + ["AE+wd", "AE", "random init"]
    later = configurations(p, cae_weight=0.1)
    assert [c["contractive_weight"] for c in later if c["family"] == "CAE+H"] == [0.1]
    # CAE-2: only when asked for, on the chosen CAE, one configuration per second-layer weight
    assert not any(c["family"] == "CAE-2" for c in later)
    stacked = [c for c in configurations(Protocol(stacked_weights=(0.1, 0.2)), cae_weight=0.3)
               if c["family"] == "CAE-2"]
    assert [(c["contractive_weight"], c["stacked_weight"]) for c in stacked] == [(0.3, 0.1),
                                                                                (0.3, 0.2)]
    # MTC: only when asked for, on the chosen CAE, one configuration per beta
    assert not any(c["family"] == "MTC" for c in later)
    mtc = [c for c in configurations(Protocol(tangent_weights=(0.1, 0.3)), cae_weight=0.3)
           if c["family"] == "MTC"]
    assert [(c["contractive_weight"], c["tangent_weight"]) for c in mtc] == [(0.3, 0.1),
                                                                            (0.3, 0.3)]


@pytest.mark.parametrize("kw, match", [
    (dict(contractive_weights=(0.1, 0.3, 0.1)), "repeats a value"),
    (dict(tangent_weights=(0.3, 0.3000000001)), "repeats a value"),
    ({"contractive_weights": ()}, "contractive_weights"),
    ({"weight_decays": (0.1, -1)}, "weight_decays"),
    ({"n_hidden": 0}, "n_hidden"),
    ({"stacked_weights": (0.1, float("nan"))}, "stacked_weights"),
    ({"tangent_weights": (-1.0,)}, "tangent_weights"),
    ({"tangent_weights": (1.0,), "n_tangents": 1001}, "n_tangents=1001 must be at most"),
    ({"tangent_probes": -1}, "tangent_probes"),
    ({"seed": -1}, "seed"),
    ({"seed": 2**40}, "seed"),
    ({"seed": 1.5}, "seed"),
    ({"finetune_seeds": 0}, "finetune_seeds"),
    ({"finetune_seeds": 2.5}, "finetune_seeds"),
    ({"seed": 2**32 - 2, "finetune_seeds": 3}, "must stay below 2\\*\\*32"),
])
def test_protocol_is_validated(kw, match):
    with pytest.raises(ValueError, match=match):
        Protocol(**kw)


@needs_mnist
def test_quick_run_writes_the_table_and_resumes(tmp_path, capsys):
    out = tmp_path / "r"
    argv = ["reproduce", "rifai2011", "--quick", "--out", str(out), "--data-dir", MNIST_DIR,
            "--device", "cpu", "--weights", "0.1,1", "--pretrain-epochs", "2",
            "--finetune-epochs", "2"]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    results = json.loads((out / "results.json").read_text())
    assert set(results["chosen"]) == set(FAMILIES)
    for fam, r in results["chosen"].items():
        assert 0 <= r["test_error"] <= 1 and 0 <= r["valid_error"] <= 1
        if fam not in ("random init", "CAE-2", "MTC"):
            assert 0 <= r["saturation"] <= 1 and r["mean_squared_jacobian_entry"] > 0
        if fam not in ("random init", "MTC"):  # MTC's frozen codes are the CAE's
            assert "linear_probe_error" in r and "knn_error" in r
    # CAE-2: a second layer on the chosen CAE's codes, fine-tuned as a two-layer MLP
    stack = results["chosen"]["CAE-2"]
    assert stack["contractive_weight"] == results["chosen"]["CAE"]["contractive_weight"]
    (folder,) = (out / "models").glob("CAE-2_*")
    second = ContractiveAutoencoder.load(folder, device="cpu")
    assert second.n_features_in_ == second.n_components == 100  # on the 100 quick codes
    assert "lambda2=0.1" in (out / "table.md").read_text()
    # the CAE chosen is the one with the lowest validation error
    caes = [r for r in results["all"] if r["family"] == "CAE"]
    assert results["chosen"]["CAE"]["valid_error"] == min(r["valid_error"] for r in caes)
    table = (out / "table.md").read_text()
    assert "1.14%" in table and "quick mode" in table and table in printed
    assert "| CAE-2 |" in table
    assert "adversarial training (weight 0.5, eps 1, l2 step)" in table  # the default
    # MTC (quick mode has beta 0.3): the chosen CAE, fine-tuned along its tangents
    mtc = results["chosen"]["MTC"]
    assert mtc["contractive_weight"] == results["chosen"]["CAE"]["contractive_weight"]
    assert mtc["tangents_time_s"] > 0 and mtc["n_tangents"] == 15
    assert "| MTC | lambda=" in table and "beta=0.3" in table
    assert not list((out / "models").glob("MTC*"))  # no model of its own
    assert (out / "contraction_curves.png").stat().st_size > 0
    assert (out / "spectra.png").stat().st_size > 0

    # a rerun resumes: nothing is trained again, the results are the same
    stage = out / "stages" / "AE.json"
    mtime = stage.stat().st_mtime_ns
    assert main(argv) == 0
    assert "done before" in capsys.readouterr().out
    assert stage.stat().st_mtime_ns == mtime
    again = json.loads((out / "results.json").read_text())
    assert again["chosen"]["CAE"]["test_error"] == results["chosen"]["CAE"]["test_error"]

    # a stage lost (a run killed in it) is redone from its saved pre-trained model
    stage.unlink()
    assert main(argv) == 0
    redone = json.loads(stage.read_text())
    assert redone["test_error"] == results["chosen"]["AE"]["test_error"]

    # another fine-tuning: the pre-trained models are kept, every stage is fine-tuned again
    models = {p: p.stat().st_mtime_ns for p in (out / "models").rglob("*.safetensors")}
    assert models
    capsys.readouterr()
    assert main([*argv, "--finetune-dropout", "0.2"]) == 0
    printed = capsys.readouterr().out
    assert "finetune_dropout" in printed and "done before" not in printed
    assert {p: p.stat().st_mtime_ns for p in (out / "models").rglob("*.safetensors")} == models
    changed = json.loads(stage.read_text())
    assert changed["finetune_settings"]["finetune_dropout"] == 0.2
    assert changed["pretrain_time_s"] == redone["pretrain_time_s"]  # loaded, not trained
    assert json.loads((out / "protocol.json").read_text())["finetune_dropout"] == 0.2

    # a wider grid adds its configuration; the stages done stay done
    capsys.readouterr()
    assert main([*argv, "--finetune-dropout", "0.2", "--weights", "0.1,1,3"]) == 0
    printed = capsys.readouterr().out
    assert "CAE lambda=0.1" in printed and "done before" in printed
    assert "CAE lambda=3" in printed and (out / "models" / "CAE_lambda_3").is_dir()
    assert json.loads(stage.read_text()) == changed

    # another pre-training into the same folder is refused, naming what differs
    assert main([*argv[:-4], "--pretrain-epochs", "3", "--finetune-epochs", "2"]) == 2
    err = capsys.readouterr().err
    assert "pretrain_epochs" in err and "finetune" not in err


@pytest.mark.parametrize("extra, match", [
    (["--weights", "0.1,x"], "not a comma-separated list"),
    (["--weights", "0,0.1"], "contractive_weights"),
    (["--device", "tpu"], "device='tpu'"),
    (["--pretrain-epochs", "0"], "pretrain_epochs"),
    (["--finetune-dropout", "1"], "finetune_dropout"),
    (["--stacked-weights", "-1"], "stacked_weights"),
    (["--tangent-weights", "-1"], "tangent_weights"),
    (["--weights", "0.1,,0.2"], "comma-separated"),
    (["--seed", "-1"], "seed"),
    (["--finetune-seeds", "0"], "finetune_seeds=0"),
    (["--finetune-seeds", "two"], "invalid int value: 'two'"),
    (["--jobs", "0"], "--jobs"),
    (["--jobs", "two"], "--jobs"),
    (["--finetune-adversarial-weight", "2"], "finetune_adversarial_weight=2.0 must be a"),
    (["--finetune-adversarial-weight", "-1"], "finetune_adversarial_weight=-1.0 must be a"),
    (["--finetune-adversarial-weight", "0", "--finetune-adversarial-epsilon", "1"],
     "need --finetune-adversarial-weight above 0"),
    (["--finetune-adversarial-weight", "0.5", "--finetune-adversarial-epsilon", "0"],
     "finetune_adversarial_epsilon=0.0"),
    (["--finetune-adversarial-norm", "l1"], "invalid choice: 'l1'"),
    (["--finetune-adversarial-weight", "0", "--finetune-adversarial-norm", "inf"],
     "need --finetune-adversarial-weight above 0"),
    (["--finetune-adversarial-epsilon", "-1"], "finetune_adversarial_epsilon=-1.0"),
])
def test_bad_options_exit_2_and_write_nothing(tmp_path, capsys, extra, match):
    out = tmp_path / "r"
    try:
        code = main(["reproduce", "rifai2011", "--quick", "--out", str(out), *extra])
    except SystemExit as exc:  # argparse's own refusals
        code = exc.code
    assert code == 2
    err = capsys.readouterr().err
    assert match in err and len(err.strip().splitlines()) == 1
    assert not out.exists()


@needs_mnist
def test_adversarial_fine_tuning_is_a_fine_tuning_option(tmp_path, capsys):
    """On by default (weight 0.5, an L2 step of 1.0); switched off with weight 0, it is not
    recorded (runs written before it existed resume as they were); turned on in a rerun,
    every stage is fine-tuned again from the kept models."""
    names = ("finetune_adversarial_weight", "finetune_adversarial_epsilon",
             "finetune_adversarial_norm")
    assert {k: Protocol().to_dict()[k] for k in names} == dict(zip(names, (0.5, 1.0, "l2")))
    off = Protocol(finetune_adversarial_weight=0)
    assert not set(off.to_dict()) & set(names)
    # what a worker process rebuilds from the dict: weight 0 stays 0, not the default
    for p in (Protocol(), off, Protocol.quick_protocol(finetune_adversarial_norm="inf")):
        assert Protocol.from_dict(p.to_dict()) == p
    out = tmp_path / "r"
    argv = ["reproduce", "rifai2011", "--quick", "--out", str(out), "--data-dir", MNIST_DIR,
            "--device", "cpu", "--pretrain-epochs", "1", "--finetune-epochs", "2",
            "--stacked-weights", "none", "--tangent-weights", "none", "--jobs", "1"]
    assert main([*argv, "--finetune-adversarial-weight", "0"]) == 0
    before = json.loads((out / "stages" / "CAE_lambda_0.1.json").read_text())
    assert "finetune_adversarial_weight" not in before["finetune_settings"]
    assert "adversarial" not in (out / "table.md").read_text()
    models = {p: p.stat().st_mtime_ns for p in (out / "models").rglob("*.safetensors")}
    capsys.readouterr()
    assert main([*argv, "--finetune-adversarial-epsilon", "0.5"]) == 0  # weight: the default
    printed = capsys.readouterr().out
    assert "finetune_adversarial_weight" in printed and "done before" not in printed
    # kept (a CAE+H is added where the choice of lambda changed)
    assert all(p.stat().st_mtime_ns == t for p, t in models.items())
    after = json.loads((out / "stages" / "CAE_lambda_0.1.json").read_text())
    assert {k: after["finetune_settings"][k] for k in names} == dict(zip(names,
                                                                          (0.5, 0.5, "l2")))
    assert after["finetune_history"][0]["loss"] != before["finetune_history"][0]["loss"]
    assert json.loads((out / "protocol.json").read_text())["finetune_adversarial_weight"] == 0.5
    assert "adversarial training (weight 0.5, eps 0.5, l2 step)" in (out / "table.md").read_text()


@pytest.mark.parametrize("existing", ["notes.txt", "config.json"])
def test_experiment_refuses_a_folder_of_something_else(tmp_path, existing):
    (tmp_path / existing).write_text("{}")
    with pytest.raises(ValueError, match="no protocol.json"):
        Experiment(tmp_path, Protocol.quick_protocol()).run()
    assert [p.name for p in tmp_path.iterdir()] == [existing]


def test_experiment_refuses_a_file_as_folder(tmp_path):
    f = tmp_path / "file"
    f.write_text("x")
    with pytest.raises(ValueError, match="not a folder"):
        Experiment(f, Protocol.quick_protocol()).run()


def test_missing_mnist_is_one_error_and_writes_nothing(tmp_path, capsys):
    out = tmp_path / "r"
    empty = tmp_path / "empty"
    empty.mkdir()
    assert main(["reproduce", "rifai2011", "--quick", "--out", str(out),
                 "--data-dir", str(empty)]) == 2
    err = capsys.readouterr().err
    assert "mnist" in err.lower() and len(err.strip().splitlines()) == 1
    assert not out.exists()


def test_experiment_ignores_hidden_files_in_a_new_folder(tmp_path):
    (tmp_path / ".DS_Store").write_text("x")
    exp = Experiment(tmp_path, Protocol.quick_protocol())
    exp._check_folder()  # no error: only a hidden file
    exp._prepare_folder()
    assert (tmp_path / "protocol.json").exists()


def test_jobs_auto_is_one_process_per_core_on_a_cpu_and_one_elsewhere():
    import torch

    from contractive.commands.reproduce import MAX_AUTO_JOBS, default_jobs

    cpu = torch.device("cpu")
    assert default_jobs(cpu) == min(len(os.sched_getaffinity(0)), MAX_AUTO_JOBS)
    assert default_jobs(cpu, quick=True) == 1  # starting a process outlasts a quick stage
    assert default_jobs(torch.device("cuda")) == default_jobs(torch.device("mps")) == 1
    with pytest.raises(ValueError, match="jobs"):
        Experiment("unused", Protocol.quick_protocol(), jobs=0)


@needs_mnist
def test_worker_processes_keep_adversarial_training_off(tmp_path):
    """Weight 0 is left out of the protocol sent to a worker; the worker must not read that
    as the default (0.5)."""
    protocol = Protocol.quick_protocol(pretrain_epochs=1, finetune_epochs=1,
                                       contractive_weights=(0.1,), stacked_weights=(),
                                       tangent_weights=(), finetune_adversarial_weight=0)
    logs = []
    Experiment(tmp_path / "r", protocol, device="cpu", data_dir=MNIST_DIR, jobs=2, threads=1,
               log=logs.append).run()
    stages = list((tmp_path / "r" / "stages").glob("*.json"))
    assert len(stages) == 5 and sum("started" in line for line in logs) == 5
    for stage in stages:
        settings = json.loads(stage.read_text())["finetune_settings"]
        assert settings == protocol.finetune_settings()
        assert "finetune_adversarial_weight" not in settings


@needs_mnist
def test_worker_processes_give_the_serial_results_and_stop_on_an_error(tmp_path):
    """Two configurations at a time, each in its own process, one torch thread each (as the
    serial run here): every stage's numbers are the serial run's, the ones that wait for the
    chosen CAE (CAE+H, CAE-2, MTC) included; a stage that fails in its worker raises here."""
    import multiprocessing

    import torch

    torch.set_num_threads(1)  # the serial run's threads: the workers'
    protocol = Protocol.quick_protocol(pretrain_epochs=1, finetune_epochs=2)
    runs, logs = {}, {}
    for jobs in (1, 2):
        logs[jobs] = []
        runs[jobs] = Experiment(tmp_path / f"j{jobs}", protocol, device="cpu",
                                data_dir=MNIST_DIR, jobs=jobs, threads=1,
                                log=logs[jobs].append).run()
    numbers = [[(r["name"], r["valid_error"], r["test_error"], r.get("saturation"))
                for r in runs[j]["all"]] for j in (1, 2)]
    assert numbers[0] == numbers[1]
    assert {r["family"] for r in runs[2]["all"]} == set(FAMILIES)
    assert sum("started" in line for line in logs[2]) == len(runs[2]["all"])
    assert not any("started" in line for line in logs[1])
    assert "2 processes at a time" in runs[2]["machine"]
    assert (tmp_path / "j2" / "table.md").read_text().count("| MTC |") == 1
    for stage in (tmp_path / "j2" / "stages").glob("*.json"):  # the workers' protocol
        settings = json.loads(stage.read_text())["finetune_settings"]  # MTC's: 2 more
        assert protocol.finetune_settings().items() <= settings.items()

    # a tie between the CAEs is broken in grid order, also when the second CAE's result
    # comes first (here: done before, while the first runs in a worker)
    import shutil

    shutil.copytree(tmp_path / "j2", tmp_path / "tie")
    stages = tmp_path / "tie" / "stages"
    (stages / "CAE_lambda_0.1.json").unlink()
    first = next(r for r in runs[2]["all"] if r["name"] == "CAE lambda=0.1")
    second = json.loads((stages / "CAE_lambda_0.3.json").read_text())
    second["valid_error"] = first["valid_error"]
    (stages / "CAE_lambda_0.3.json").write_text(json.dumps(second))
    tie = Experiment(tmp_path / "tie", protocol, device="cpu", data_dir=MNIST_DIR, jobs=2,
                     threads=1, log=[].append).run()
    assert tie["chosen"]["CAE"]["contractive_weight"] == 0.1
    assert tie["chosen"]["MTC"]["contractive_weight"] == 0.1

    # a resume whose stage fails in its worker (a corrupt saved model): the error, here
    (tmp_path / "j2" / "stages" / "AE.json").unlink()
    (tmp_path / "j2" / "models" / "AE" / "model.json").write_text("{bad")
    log = []
    with pytest.raises(ValueError, match="not a contractive model config"):
        Experiment(tmp_path / "j2", protocol, device="cpu", data_dir=MNIST_DIR, jobs=2,
                   threads=1, log=log.append).run()
    assert any("done before" in line for line in log)
    assert not (tmp_path / "j2" / "stages" / "AE.json").exists()
    assert multiprocessing.active_children() == []  # every worker stopped and joined


class _Ended:
    """Stands for a worker process that has ended (``join`` and ``exitcode`` only)."""

    def __init__(self, exitcode: int) -> None:
        self.exitcode = exitcode

    def join(self) -> None:
        pass


@pytest.mark.parametrize("sent, error, match", [
    (None, "WorkerDied", "AE died \\(exit code -9\\); rerun the same command"),
    (("ValueError", "ValueError: bad file", "bad file", "Traceback ..."), "ValueError",
     "^bad file$"),
    (("OSError", "OSError: ...", (28, "No space left on device", "/x/stages/AE.json"),
      "Traceback ..."), "OSError", "No space left on device: '/x/stages/AE.json'"),
    ((None, "KeyError: 'x'", "'x'", "Traceback (most recent call last): ..."), "RuntimeError",
     "AE failed in its worker process: KeyError: 'x'\nTraceback"),
])
def test_a_worker_that_fails_is_reported_by_kind(tmp_path, sent, error, match):
    import multiprocessing

    from contractive import reproduce

    receive, send = multiprocessing.Pipe(duplex=False)
    if sent is not None:
        send.send(("error", sent, ["  a line the worker logged"]))
    send.close()  # EOF after the message, or instead of one (a killed worker)
    log = []
    exp = Experiment(tmp_path, Protocol.quick_protocol(), jobs=2, log=log.append)
    expected = {"WorkerDied": reproduce.WorkerDied, "ValueError": ValueError,
                "OSError": OSError, "RuntimeError": RuntimeError}[error]
    with pytest.raises(expected, match=match) as info:
        exp._collect(_Ended(-9), receive, {"name": "AE"})
    assert type(info.value) is expected
    if error == "OSError":  # the command line's one line names the file
        assert info.value.filename == "/x/stages/AE.json" and info.value.errno == 28
    assert log == ([] if sent is None else ["  a line the worker logged"])


def test_combine_runs_means_the_errors_and_sums_the_times():
    from contractive.reproduce import combine_runs

    a = {"valid_error": 0.01, "test_error": 0.02, "finetune_time_s": 3.0,
         "finetune_epochs": 5, "finetune_history": [{"epoch": 1}]}
    b = {"valid_error": 0.03, "test_error": 0.01, "finetune_time_s": 4.0,
         "finetune_epochs": 7, "finetune_history": [{"epoch": 1}]}
    assert combine_runs({0: a}) == a  # one seed: that run's own fields, as before
    both = combine_runs({0: a, 1: b})
    assert both["valid_error"] == pytest.approx(0.02)
    assert both["test_error"] == pytest.approx(0.015)
    assert both["finetune_time_s"] == 7.0 and "finetune_epochs" not in both
    assert both["finetune_runs"] == [{"seed": 0, **a}, {"seed": 1, **b}]
    mtc = {**a, "tangents_time_s": 2.0, "n_tangents": 15, "tangent_probes": 1}
    both = combine_runs({0: mtc, 1: {**b, "tangents_time_s": 5.0, "n_tangents": 15,
                                     "tangent_probes": 1}})
    assert both["tangents_time_s"] == 7.0 and both["n_tangents"] == 15
    listed = combine_runs({4: a}, listed=True)  # a stage between its seeds
    assert listed["finetune_runs"] == [{"seed": 4, **a}] and listed["test_error"] == 0.02
    assert Protocol(finetune_seeds=3, seed=4).finetune_seed_list() == [4, 5, 6]
    # recorded only above 1 (a run written before the field resumes as it was)
    assert "finetune_seeds" not in Protocol().to_dict()
    p = Protocol(finetune_seeds=3)
    assert Protocol.from_dict(p.to_dict()) == p and p.to_dict()["finetune_seeds"] == 3


@needs_mnist
def test_fine_tuning_seeds_are_averaged_and_kept_across_reruns(tmp_path, monkeypatch):
    """Seeds 0 and 1: each configuration fine-tuned twice from one pre-training; its errors
    are the means, the selection uses them; a rerun with more seeds fine-tunes only the new
    ones, one with fewer none, and a stage stopped between its seeds keeps the first."""
    calls, stop_at = [], []
    original = Experiment._finetune

    def counting(self, est, split, seed, *args, **kwargs):
        if (est is None, seed) in stop_at:  # a run killed in random init's seed
            raise KeyboardInterrupt
        calls.append(seed)
        return original(self, est, split, seed, *args, **kwargs)

    monkeypatch.setattr(Experiment, "_finetune", counting)
    out = tmp_path / "r"

    def run(seeds: int) -> dict:
        calls.clear()
        protocol = Protocol.quick_protocol(
            pretrain_epochs=1, finetune_epochs=2, contractive_weights=(0.1, 0.3),
            stacked_weights=(), tangent_weights=(), finetune_seeds=seeds, seed=3)
        return Experiment(out, protocol, device="cpu", data_dir=MNIST_DIR,
                          log=[].append).run()

    one = run(1)
    assert calls == [3] * 6  # two CAEs, CAE+H, AE+wd, AE, random init
    stage = json.loads((out / "stages" / "AE.json").read_text())
    assert "finetune_runs" not in stage  # the layout of a run before seeds existed
    assert "finetune_seeds" not in json.loads((out / "protocol.json").read_text())

    two = run(2)
    # seed 3's fine-tunings are kept; a CAE+H on another chosen lambda is new: both seeds
    new = {r["name"] for r in two["all"]} - {r["name"] for r in one["all"]}
    assert sorted(calls) == sorted([4] * 6 + [3] * len(new))
    before = {r["name"]: r for r in one["all"]}
    for r2 in two["all"]:
        runs = r2["finetune_runs"]
        assert [r["seed"] for r in runs] == [3, 4]
        if r2["name"] in before:  # the kept one
            assert runs[0]["test_error"] == before[r2["name"]]["test_error"]
            assert runs[0]["valid_error"] == before[r2["name"]]["valid_error"]
        assert r2["test_error"] == pytest.approx((runs[0]["test_error"]
                                                  + runs[1]["test_error"]) / 2)
        assert r2["valid_error"] == pytest.approx((runs[0]["valid_error"]
                                                   + runs[1]["valid_error"]) / 2)
        assert "finetune_history" not in runs[0]  # results.json: no epoch histories
    saved = json.loads((out / "stages" / "AE.json").read_text())
    assert len(saved["finetune_runs"][1]["finetune_history"]) >= 1
    assert saved["finetune_time_s"] == pytest.approx(
        sum(r["finetune_time_s"] for r in saved["finetune_runs"]))
    # seed 4 trains its own way (dropout masks, adversarial steps, random weights)
    assert (saved["finetune_runs"][0]["finetune_history"]
            != saved["finetune_runs"][1]["finetune_history"])
    table = (out / "table.md").read_text()
    assert "means over 2 fine-tuning seeds (3-4" in table
    t = [r["test_error"] for r in two["chosen"]["AE"]["finetune_runs"]]
    assert f"({min(t):.2%}-{max(t):.2%})" in table

    back = run(1)  # fewer seeds: nothing trained, seed 3's figures again
    assert calls == []
    assert [(r["name"], r["valid_error"], r["test_error"]) for r in back["all"]] == [
        (r["name"], r["valid_error"], r["test_error"]) for r in one["all"]]

    # killed between seeds: random init's stage holds seed 3 alone, marked unfinished
    stage_path = out / "stages" / "random_init.json"
    stage_path.unlink()
    stop_at.append((True, 4))
    with pytest.raises(KeyboardInterrupt):
        run(2)
    assert calls == [3]
    partial = json.loads(stage_path.read_text())
    assert partial["finetune_partial"] and [r["seed"] for r in partial["finetune_runs"]] == [3]
    stop_at.clear()
    single = run(1)  # one seed now: seed 3's fine-tuning, in the one-seed layout
    assert calls == []
    finished = json.loads(stage_path.read_text())
    assert "finetune_runs" not in finished and "finetune_partial" not in finished
    assert finished["finetune_history"] == partial["finetune_runs"][0]["finetune_history"]
    random_init = next(r for r in single["all"] if r["family"] == "random init")
    assert "finetune_runs" not in random_init and "finetune_epochs" in random_init
    assert "fine-tuning seeds" not in (out / "table.md").read_text()
    stage_path.write_text(json.dumps(partial))
    run(2)  # two seeds: seed 4 is trained, seed 3 kept
    assert calls == [4]
    finished = json.loads(stage_path.read_text())
    assert "finetune_partial" not in finished
    assert finished["finetune_runs"][0] == partial["finetune_runs"][0]
