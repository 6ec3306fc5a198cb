"""``contractive finetune``: a classifier from a run's encoder, from the command line."""

import json

import numpy as np
import pytest

import contractive
from contractive.cli import main


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("runs") / "d"
    assert main(["train", "digits", "--out", str(out), "--n-components", "16",
                 "--max-epochs", "5", "--seed", "0", "--device", "cpu"]) == 0
    return out


def test_finetune_reports_and_writes_its_results(run_dir, capsys):
    assert main(["finetune", str(run_dir), "--max-epochs", "5", "--learning-rate", "0.3",
                 "--device", "cpu", "--json"]) == 0
    printed = json.loads(capsys.readouterr().out)
    saved = json.loads((run_dir / "finetune.json").read_text())
    assert printed == saved
    results = saved["results"]
    assert set(results) == {"fine-tuned CAE", "random init", "frozen codes"}
    for name in ("fine-tuned CAE", "random init"):
        assert 0 <= results[name]["test_error"] < 0.9
        assert 1 <= results[name]["best_epoch"] <= results[name]["epochs"] <= 5
    assert 0 <= results["frozen codes"]["linear_probe_error"] < 0.5
    assert saved["n_test"] == 360
    # the fine-tuned classifier is saved in the run, and predicts as reported
    assert saved["classifier"] == "finetuned"  # relative to the run folder
    clf = contractive.load(run_dir / saved["classifier"], device="cpu")
    assert isinstance(clf, contractive.FineTunedClassifier)
    test = contractive.data.load_digits()
    assert clf.error(test.X_test, test.y_test) == pytest.approx(
        results["fine-tuned CAE"]["test_error"])


@pytest.mark.parametrize("extra, match", [
    (["--learning-rate", "0"], "learning_rate=0"),
    (["--batch-size", "0"], "batch_size=0"),
    (["--validation-fraction", "1.5"], "--validation-fraction 1.5"),
    (["--validation-fraction", "0"], "--validation-fraction 0"),
    (["--seed", "-1"], "--seed -1 must be between 0 and 2**32-1"),
    (["--seed", str(2**32)], "must be between 0 and 2**32-1"),
    (["--tangent-weight", "-1"], "tangent_weight=-1.0"),
    (["--tangent-weight", "1", "--n-tangents", "0"], "n_tangents=0"),
    (["--tangent-weight", "1", "--tangent-probes", "-2"], "tangent_probes=-2"),
    (["--tangent-weight", "1", "--n-tangents", "17"], "n_tangents=17 must be between 1 and 16"),
    (["--adversarial-weight", "2"], "adversarial_weight=2.0 must be a finite number in [0, 1]"),
    (["--adversarial-weight", "-1"], "adversarial_weight=-1.0 must be a finite number in [0, 1]"),
    (["--adversarial-epsilon", "0.3"], "need --adversarial-weight above 0"),
    (["--adversarial-norm", "l2"], "need --adversarial-weight above 0"),
    (["--adversarial-weight", "0.5", "--adversarial-epsilon", "0"], "adversarial_epsilon=0.0"),
    (["--adversarial-norm", "l1"], "invalid choice: 'l1'"),
])
def test_bad_options_exit_2(run_dir, capsys, extra, match):
    try:
        code = main(["finetune", str(run_dir), "--device", "cpu", *extra])
    except SystemExit as exc:  # argparse's own refusals (choices)
        code = exc.code
    assert code == 2
    err = capsys.readouterr().err
    assert match in err and len(err.strip().splitlines()) == 1, err


def test_manifold_tangent_classifier_from_the_command_line(run_dir, capsys):
    assert main(["finetune", str(run_dir), "--max-epochs", "3", "--learning-rate", "0.3",
                 "--tangent-weight", "1", "--n-tangents", "4", "--tangent-probes", "1",
                 "--no-baseline", "--device", "cpu", "--json"]) == 0
    results = json.loads(capsys.readouterr().out)["results"]
    assert set(results) == {"fine-tuned CAE", "frozen codes"}
    assert 0 <= results["fine-tuned CAE"]["test_error"] < 0.9


def test_adversarial_training_from_the_command_line(run_dir, capsys):
    """The fine-tuning settings (both MLPs get them) are recorded, and the saved classifier
    keeps them."""
    assert main(["finetune", str(run_dir), "--max-epochs", "3", "--learning-rate", "0.3",
                 "--adversarial-weight", "0.5", "--adversarial-epsilon", "0.5",
                 "--adversarial-norm", "l2", "--device", "cpu", "--json"]) == 0
    saved = json.loads(capsys.readouterr().out)
    assert saved["fine_tuning"]["adversarial_weight"] == 0.5
    assert saved["fine_tuning"]["adversarial_norm"] == "l2"
    assert 0 <= saved["results"]["random init"]["test_error"] < 0.9
    clf = contractive.load(run_dir / saved["classifier"], device="cpu")
    assert "adversarial" in clf.history_[0]
    assert (clf.adversarial_epsilon, clf.module_.adversarial_epsilon) == (0.5, 0.5)


def test_unlabelled_data_is_refused(tmp_path, capsys):
    X = np.random.default_rng(0).random((60, 5))
    np.save(tmp_path / "x.npy", X)
    out = tmp_path / "r"
    assert main(["train", str(tmp_path / "x.npy"), "--out", str(out), "--n-components", "2",
                 "--max-epochs", "1", "--test-fraction", "0.2", "--device", "cpu"]) == 0
    capsys.readouterr()
    assert main(["finetune", str(out), "--device", "cpu"]) == 2
    assert "needs labels" in capsys.readouterr().err
    assert not (out / "finetune.json").exists()


def test_a_stack_of_runs_is_fine_tuned(run_dir, tmp_path, capsys):
    """CAE-2 from the command line: a second run on the first run's codes, then --stack."""
    codes = tmp_path / "codes.npy"
    assert main(["encode", str(run_dir), "digits", "--split", "train", "-o", str(codes),
                 "--device", "cpu"]) == 0
    upper = tmp_path / "upper"
    assert main(["train", str(codes), "--out", str(upper), "--n-components", "8",
                 "--max-epochs", "3", "--seed", "0", "--device", "cpu"]) == 0
    capsys.readouterr()
    assert main(["finetune", str(run_dir), "--stack", str(upper), "--max-epochs", "3",
                 "--learning-rate", "0.3", "--device", "cpu", "--json"]) == 0
    saved = json.loads(capsys.readouterr().out)
    assert saved["stack"] == [str(upper)]
    for name in ("fine-tuned CAE", "random init"):
        assert 0 <= saved["results"][name]["test_error"] < 0.95
    # a run that does not take the codes of the layer below is refused, nothing written
    (run_dir / "finetune.json").unlink()
    assert main(["finetune", str(run_dir), "--stack", str(run_dir), "--device", "cpu"]) == 2
    err = capsys.readouterr().err
    assert "layer 2 takes 64 features but layer 1 gives 16 codes" in err
    assert len(err.strip().splitlines()) == 1 and not (run_dir / "finetune.json").exists()
    assert main(["finetune", str(run_dir), "--stack", str(tmp_path / "nope"),
                 "--device", "cpu"]) == 2
    assert "no such run folder" in capsys.readouterr().err
    assert main(["finetune", str(run_dir), "--stack", str(codes), "--device", "cpu"]) == 2
    assert "a file, not a run folder" in capsys.readouterr().err
    assert not (run_dir / "finetune.json").exists()
    # the upper layer may also be a model folder written by save(), or a stack's
    saved_upper = contractive.load(upper).save(tmp_path / "saved-upper")
    stacked_upper = contractive.StackedContractiveAutoencoder.from_encoders(
        [contractive.load(upper)]).save(tmp_path / "stacked-upper")
    for folder in (saved_upper, stacked_upper):
        assert main(["finetune", str(run_dir), "--stack", folder, "--max-epochs", "1",
                     "--no-baseline", "--device", "cpu", "--json"]) == 0
        assert json.loads(capsys.readouterr().out)["stack"] == [folder]


def test_unlabelled_data_for_a_labelled_run_names_the_data(run_dir, tmp_path, capsys):
    np.save(tmp_path / "x.npy", np.random.default_rng(0).random((20, 64)))
    assert main(["finetune", str(run_dir), str(tmp_path / "x.npy"), "--device", "cpu"]) == 2
    err = capsys.readouterr().err
    assert "x.npy: has no labels" in err and "--label-column" in err
    assert "train with" not in err
