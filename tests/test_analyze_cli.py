"""``contractive analyze``: analysis.json, the figures, the kept plain-AE baseline, --json,
--no-baseline, --n-points, a run on a CSV file, and bad inputs (exit 2, one line on stderr,
no traceback).

One small digits run is trained once per module (3 epochs, k=6) and analysed once; tests
that would change that folder work on a copy."""

from __future__ import annotations

import contextlib
import io
import json
import math
import shutil
from pathlib import Path

import numpy as np
import pytest
from sklearn.datasets import load_digits

from contractive.cli import main
from contractive.commands.analyze import UNTIED_NOTE

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
K, D = 6, 64  # the digits run: 6 code units, 8x8 images
FIGURES = ("analysis_spectrum.png", "analysis_contraction.png", "analysis_codes.png",
           "analysis_tangents.png")
TOP_KEYS = {"cae", "plain_ae", "radii", "training_distances", "pca_singular_values",
            "n_points"}
MEASURE_KEYS = {"spectrum_mean", "spectrum_std", "local_dimension_method",
                "local_dimension_counts", "local_dimension_median", "local_dimension_gap_counts",
                "contraction_ratio", "saturation",
                "mean_jacobian_frobenius_sq", "mean_squared_jacobian_entry"}


def run_cli(argv: list[str], capsys) -> tuple[int, str, str]:
    """``main(argv)`` as the shell sees it: (exit code, stdout, stderr)."""
    try:
        code = main(argv)
        assert isinstance(code, int)
    except SystemExit as exc:  # argparse's usage errors
        code = 0 if exc.code is None else exc.code
    out, err = capsys.readouterr()
    return code, out, err


def assert_one_line_error(err: str) -> None:
    assert "Traceback" not in err
    lines = err.rstrip("\n").split("\n")
    assert len(lines) == 1, err
    assert lines[0].startswith("contractive analyze"), err
    assert "error" in lines[0]


def _quiet_main(argv: list[str]) -> str:
    """``main(argv)`` outside a test's capsys (for module-scoped fixtures); its stdout."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(argv)
    assert code == 0, err.getvalue()
    return out.getvalue()


def _check_png(path: Path) -> None:
    blob = path.read_bytes()
    assert blob[:8] == PNG_MAGIC, path
    assert len(blob) > 2000, path


def _snapshot(folder: Path) -> dict[str, int]:
    """Every file below ``folder`` with its mtime: to see that nothing was written."""
    return {str(p.relative_to(folder)): p.stat().st_mtime_ns
            for p in sorted(folder.rglob("*")) if p.is_file()}


def _copy_run(src: Path, dst: Path, *, keep_baseline: bool = False) -> Path:
    ignore = ["analysis*"] + ([] if keep_baseline else ["baseline"])
    shutil.copytree(src, dst, ignore=shutil.ignore_patterns(*ignore))
    return dst


def write_csv(path: Path, n: int = 120, d: int = 5, seed: int = 0) -> Path:
    """``n`` rows of ``d`` features (f1..fd) and, third, a label column ``label``."""
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, d)) * np.arange(1, d + 1) + 3
    y = (X[:, 0] > 3).astype(int) + (X[:, 1] > 3).astype(int)
    names = [f"f{i + 1}" for i in range(d)]
    names.insert(2, "label")
    lines = [",".join(names)]
    for row, lab in zip(X, y):
        cells = [f"{v:.6f}" for v in row]
        cells.insert(2, str(lab))
        lines.append(",".join(cells))
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.fixture(scope="module")
def digits_run(tmp_path_factory) -> Path:
    """A digits run (3 epochs, k=6), trained once per module."""
    out = tmp_path_factory.mktemp("analyze_digits") / "run"
    _quiet_main(["train", "digits", "--out", str(out), "--max-epochs", "3", "--seed", "0",
                 "--n-components", str(K)])
    return out


@pytest.fixture(scope="module")
def analyzed(digits_run) -> dict:
    """``analyze RUN`` once: its stdout, analysis.json and the baseline's weights' mtime."""
    stdout = _quiet_main(["analyze", str(digits_run)])
    return {
        "stdout": stdout,
        "result": json.loads((digits_run / "analysis.json").read_text()),
        "baseline_mtime": (digits_run / "baseline" / "model.safetensors").stat().st_mtime_ns,
        "files": {p.name for p in digits_run.iterdir()},
    }


@pytest.fixture(scope="module")
def csv_run(tmp_path_factory) -> tuple[Path, Path]:
    """(run folder, data file): 2 epochs on a 120-row, 5-feature CSV with labels."""
    root = tmp_path_factory.mktemp("analyze_csv")
    data = write_csv(root / "data.csv")
    out = root / "run"
    _quiet_main(["train", str(data), "--label-column", "label", "--out", str(out),
                 "--max-epochs", "2", "--seed", "0"])
    return out, data


# -- analyze RUN ----------------------------------------------------------------------------


def test_analyze_writes_analysis_json(digits_run, analyzed):
    result = analyzed["result"]
    assert TOP_KEYS <= set(result)
    assert result["n_points"] == 360  # the run's held-out rows (fewer than --n-points 1000)
    dist = result["training_distances"]
    assert set(dist) == {"min", "median", "max"}
    assert 0 < dist["min"] <= dist["median"] <= dist["max"]
    radii = result["radii"]
    assert radii[0] == 0.0 and radii[-1] > dist["max"]
    assert all(b > a for a, b in zip(radii, radii[1:]))
    pca = result["pca_singular_values"]
    assert len(pca) == K and all(a >= b for a, b in zip(pca, pca[1:])) and pca[-1] > 0
    assert "digits" in result["data"]
    assert "held out" in analyzed["stdout"] and "analysis.json" in analyzed["stdout"]


@pytest.mark.parametrize("model", ["cae", "plain_ae"])
def test_analyze_measures(analyzed, model):
    result = analyzed["result"]
    m = result[model]
    assert MEASURE_KEYS <= set(m)
    s = m["spectrum_mean"]
    assert len(s) == K and len(m["spectrum_std"]) == K
    assert all(a >= b for a, b in zip(s, s[1:])) and s[-1] > 0  # descending
    ratios = m["contraction_ratio"]
    assert len(ratios) == len(result["radii"])
    assert all(math.isfinite(r) and r > 0 for r in ratios)
    assert 0.0 <= m["saturation"] <= 1.0
    frob = m["mean_jacobian_frobenius_sq"]
    assert frob > 0
    assert m["mean_squared_jacobian_entry"] == pytest.approx(frob / (K * D), rel=1e-12)
    assert m["local_dimension_method"] == "energy 0.8"
    for key in ("local_dimension_counts", "local_dimension_gap_counts"):
        counts = m[key]
        assert sum(counts.values()) == result["n_points"]
        assert all(1 <= int(dim) <= K for dim in counts)
    assert 1 <= m["local_dimension_median"] <= K


def test_analyze_writes_figures_and_baseline(digits_run, analyzed):
    assert set(FIGURES) | {"analysis.json", "baseline"} <= analyzed["files"]
    for name in FIGURES:  # digits are 8x8 images: tangents drawn too
        _check_png(digits_run / name)
    baseline = digits_run / "baseline"
    assert {"model.json", "model.safetensors"} <= {p.name for p in baseline.iterdir()}
    # the plain AE: the run's parameters with contractive weight 0
    plain = json.loads((baseline / "model.json").read_text())["metadata"]["params"]
    cae = json.loads((digits_run / "model.json").read_text())["metadata"]["params"]
    assert cae["contractive_weight"] > 0
    assert plain["contractive_weight"] == 0.0 and plain["higher_order_weight"] == 0.0
    differ = {k for k in cae if plain.get(k) != cae[k]}
    assert differ <= {"contractive_weight", "higher_order_weight", "verbose", "device"}


def test_second_analyze_reuses_the_baseline_and_json_output(digits_run, analyzed, capsys):
    weights = digits_run / "baseline" / "model.safetensors"
    assert weights.stat().st_mtime_ns == analyzed["baseline_mtime"]
    code, stdout, err = run_cli(["analyze", str(digits_run), "--json"], capsys)
    assert code == 0, err
    assert "Traceback" not in err
    assert weights.stat().st_mtime_ns == analyzed["baseline_mtime"]  # loaded, not retrained
    printed = json.loads(stdout)  # stdout is nothing but the JSON
    assert printed == json.loads((digits_run / "analysis.json").read_text())
    assert TOP_KEYS <= set(printed)
    # same model, same points, same baseline: the same numbers
    for model in ("cae", "plain_ae"):
        for key in ("spectrum_mean", "mean_jacobian_frobenius_sq", "contraction_ratio"):
            np.testing.assert_allclose(printed[model][key], analyzed["result"][model][key],
                                       rtol=1e-6)


def test_no_baseline_and_n_points(digits_run, tmp_path, capsys):
    run = _copy_run(digits_run, tmp_path / "run")
    code, stdout, err = run_cli(["analyze", str(run), "--no-baseline", "--n-points", "50"],
                                capsys)
    assert code == 0, err
    result = json.loads((run / "analysis.json").read_text())
    assert "plain_ae" not in result
    assert not (run / "baseline").exists()
    assert result["n_points"] == 50
    assert sum(result["cae"]["local_dimension_counts"].values()) == 50
    assert len(result["cae"]["spectrum_mean"]) == K
    assert "50 points" in stdout and "plain AE" not in stdout
    for name in FIGURES:
        _check_png(run / name)


def test_untied_run_gets_a_note_and_a_tied_run_none(digits_run, analyzed, tmp_path, capsys):
    """An untied decoder can undo the encoder's contraction: analyze says so, once."""
    assert analyzed["stdout"].count("note: untied decoder") == 1
    assert analyzed["result"]["notes"] == [UNTIED_NOTE]
    run = tmp_path / "tied"
    code, _, err = run_cli(["train", "digits", "--out", str(run), "--max-epochs", "2",
                            "--seed", "0", "--n-components", str(K), "--tied-weights"], capsys)
    assert code == 0, err
    code, stdout, err = run_cli(["analyze", str(run), "--no-baseline"], capsys)
    assert code == 0, err
    assert "note:" not in stdout
    assert "notes" not in json.loads((run / "analysis.json").read_text())


def test_n_points_with_baseline(digits_run, tmp_path, capsys):
    run = _copy_run(digits_run, tmp_path / "run", keep_baseline=True)
    code, stdout, err = run_cli(["analyze", str(run), "--n-points", "50", "--json"], capsys)
    assert code == 0, err
    result = json.loads(stdout)
    assert result["n_points"] == 50
    for model in ("cae", "plain_ae"):
        assert sum(result[model]["local_dimension_counts"].values()) == 50


# -- a run on a CSV file --------------------------------------------------------------------


def test_analyze_csv_run(csv_run, capsys):
    run, _ = csv_run
    code, stdout, err = run_cli(["analyze", str(run), "--json"], capsys)
    assert code == 0, err
    result = json.loads(stdout)
    assert result == json.loads((run / "analysis.json").read_text())
    k = json.loads((run / "config.json").read_text())["params"]["n_components"]
    assert len(result["cae"]["spectrum_mean"]) == min(k, 5)
    assert len(result["pca_singular_values"]) == min(k, 5)
    assert result["cae"]["mean_squared_jacobian_entry"] == pytest.approx(
        result["cae"]["mean_jacobian_frobenius_sq"] / (k * 5), rel=1e-12)
    assert 2 <= result["n_points"] <= 120
    assert not (run / "analysis_tangents.png").exists()  # 5 features: not a square image
    for name in FIGURES[:3]:
        _check_png(run / name)
    assert (run / "baseline" / "model.json").exists()


def test_analyze_csv_run_on_its_file(csv_run, capsys):
    run, data = csv_run
    code, stdout, err = run_cli(["analyze", str(run), str(data), "--label-column", "label",
                                 "--no-baseline", "--json"], capsys)
    assert code == 0, err
    result = json.loads(stdout)
    assert result["n_points"] == 120 and result["data"] == str(data)
    _check_png(run / "analysis_codes.png")
    assert not (run / "analysis_tangents.png").exists()


# -- bad inputs -----------------------------------------------------------------------------


@pytest.mark.parametrize("argv,words", [
    (["--n-tangents", "0"], ["--n-tangents 0", "between 1 and 6"]),
    (["--n-tangents", "99"], ["--n-tangents 99", "between 1 and 6"]),
    (["--n-points", "1"], ["--n-points 1", "at least 2"]),
    (["--n-points", "-3"], ["--n-points -3"]),
    (["--n-points", "many"], ["--n-points"]),
])
def test_bad_options(digits_run, analyzed, capsys, argv, words):
    before = _snapshot(digits_run)
    code, stdout, err = run_cli(["analyze", str(digits_run), *argv], capsys)
    assert code == 2 and stdout == ""
    assert_one_line_error(err)
    for w in words:
        assert w in err, err
    assert _snapshot(digits_run) == before  # nothing written


def test_nonexistent_run(tmp_path, capsys):
    missing = tmp_path / "missing_run"
    code, stdout, err = run_cli(["analyze", str(missing)], capsys)
    assert code == 2 and stdout == ""
    assert_one_line_error(err)
    assert str(missing) in err
    assert not missing.exists()


def test_data_with_the_wrong_number_of_features(digits_run, analyzed, tmp_path, capsys):
    data = write_csv(tmp_path / "narrow.csv", n=30, d=5)
    before = _snapshot(digits_run)
    code, stdout, err = run_cli(["analyze", str(digits_run), str(data),
                                 "--label-column", "label"], capsys)
    assert code == 2 and stdout == ""
    assert_one_line_error(err)
    assert "5 features" in err and "64" in err and str(data) in err
    assert _snapshot(digits_run) == before


def test_run_folder_without_a_model(digits_run, tmp_path, capsys):
    run = tmp_path / "run"
    run.mkdir()
    shutil.copy(digits_run / "config.json", run / "config.json")
    code, stdout, err = run_cli(["analyze", str(run)], capsys)
    assert code == 2 and stdout == ""
    assert_one_line_error(err)
    assert "no model" in err and "--resume" in err
    assert [p.name for p in run.iterdir()] == ["config.json"]


def test_folder_that_is_not_a_run(tmp_path, capsys):
    code, stdout, err = run_cli(["analyze", str(tmp_path)], capsys)
    assert code == 2 and stdout == ""
    assert_one_line_error(err)
    assert "config.json" in err
    assert list(tmp_path.iterdir()) == []


def test_analyze_help_has_an_example(capsys):
    code, stdout, _ = run_cli(["analyze", "--help"], capsys)
    assert code == 0
    assert "contractive analyze runs/" in stdout
    for flag in ("--n-points", "--n-tangents", "--no-baseline", "--json"):
        assert flag in stdout


def test_run_without_held_out_rows(tmp_path, capsys):
    data = write_csv(tmp_path / "data.csv", n=40)
    run = tmp_path / "run"
    _quiet_main(["train", str(data), "--label-column", "label", "--out", str(run),
                 "--test-fraction", "0", "--max-epochs", "1", "--seed", "0"])
    before = _snapshot(run)
    code, stdout, err = run_cli(["analyze", str(run), "--no-baseline"], capsys)
    assert code == 2 and stdout == ""
    assert_one_line_error(err)
    assert "held out no rows" in err and "DATA" in err
    assert _snapshot(run) == before
    # naming DATA works
    code, stdout, err = run_cli(["analyze", str(run), str(data), "--label-column", "label",
                                 "--no-baseline", "--json"], capsys)
    assert code == 0, err
    assert json.loads(stdout)["n_points"] == 40


# -- behaviour that looks wrong in src (these tests fail until it is fixed) -----------------


def test_default_n_tangents_fits_a_run_with_few_components(tmp_path, capsys):
    """A run with fewer than 4 code units: plain ``analyze RUN`` (no --n-tangents given)
    should work. src/contractive/commands/analyze.py ``run`` checks the default
    ``--n-tangents 4`` against ``min(n_components, n_features)`` and refuses with exit 2,
    here on a 5-feature CSV where no tangent image is even drawn."""
    data = write_csv(tmp_path / "data.csv", n=60)
    run = tmp_path / "run"
    _quiet_main(["train", str(data), "--label-column", "label", "--out", str(run),
                 "--n-components", "2", "--max-epochs", "1", "--seed", "0"])
    code, stdout, err = run_cli(["analyze", str(run), "--no-baseline", "--json"], capsys)
    assert code == 0, err
    assert len(json.loads(stdout)["cae"]["spectrum_mean"]) == 2


def test_baseline_follows_a_resumed_run(digits_run, analyzed, tmp_path, capsys):
    """After ``train --resume --max-epochs 5`` the plain AE compared against should have the
    run's parameters (5 epochs). src/contractive/commands/analyze.py ``_baseline`` reuses
    RUN_DIR/baseline whenever its model.json exists, without checking that it was trained
    with the run's current parameters, so the 5-epoch CAE is compared with a 3-epoch AE."""
    run = _copy_run(digits_run, tmp_path / "run", keep_baseline=True)
    _quiet_main(["train", "--out", str(run), "--resume", "--max-epochs", "5"])
    cae = json.loads((run / "model.json").read_text())["metadata"]["params"]
    assert cae["max_epochs"] == 5
    code, _, err = run_cli(["analyze", str(run), "--n-points", "50"], capsys)
    assert code == 0, err
    plain = json.loads((run / "baseline" / "model.json").read_text())["metadata"]["params"]
    assert plain["max_epochs"] == cae["max_epochs"]


def test_one_row_is_refused_and_nothing_is_written(digits_run, analyzed, tmp_path, capsys):
    one = tmp_path / "one.npy"
    np.save(one, load_digits().data[:1])
    before = _snapshot(digits_run)
    code, stdout, err = run_cli(["analyze", str(digits_run), str(one), "--no-baseline"], capsys)
    assert code == 2 and stdout == ""
    assert_one_line_error(err)
    assert "1 row" in err and "at least 2" in err and str(one) in err
    assert _snapshot(digits_run) == before


def test_a_damaged_or_misplaced_baseline_is_one_line_with_the_way_out(digits_run, analyzed,
                                                                      tmp_path, capsys):
    import shutil

    run = tmp_path / "run"
    shutil.copytree(digits_run, run)
    weights = run / "baseline" / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:-7] + b"garbage")
    before = _snapshot(run)
    code, stdout, err = run_cli(["analyze", str(run)], capsys)
    assert code == 2 and stdout == ""
    assert_one_line_error(err)
    assert "baseline" in err and "--no-baseline" in err and "delete" in err
    assert _snapshot(run) == before
    shutil.rmtree(run / "baseline")
    (run / "baseline").write_text("not a folder")
    before = _snapshot(run)
    code, _, err = run_cli(["analyze", str(run)], capsys)
    assert code == 2
    assert_one_line_error(err)
    assert "is a file" in err and "--no-baseline" in err
    assert _snapshot(run) == before
