"""The README's code runs and says what it does: the Python blocks are executed, the
quickstart commands are checked against .ci/run and the command-line parser."""

from __future__ import annotations

import importlib.util
import re
import shlex
import textwrap
from pathlib import Path

import numpy as np
import pytest

from contractive import ContractiveAutoencoder

REPO = Path(__file__).resolve().parents[1]
README = REPO / "README.md"
BENCH = REPO / "benchmarks"
MNIST_DIR = (REPO.parent / "shared" / "data" / "mnist").resolve()

QUICKSTART = (
    "./setup.sh && .venv/bin/contractive train digits",
    "./setup.sh && .venv/bin/python -m pytest -q",
)
TEST_COMMAND = ".venv/bin/python -m pytest -q"


def _text() -> str:
    return README.read_text(encoding="utf-8")


def _sections() -> dict[str, str]:
    """``## heading`` -> the text under it (up to the next ``## ``)."""
    parts = re.split(r"^## +(.+?)\s*$", _text(), flags=re.M)
    return {parts[i]: parts[i + 1] for i in range(1, len(parts) - 1, 2)}


def _blocks(text: str, lang: str) -> list[str]:
    return re.findall(rf"^```{lang}[ \t]*\n(.*?)^```", text, flags=re.S | re.M)


def _section_block_text(heading_fragment: str) -> str:
    """The text of the one README section whose heading contains ``heading_fragment``."""
    matches = [body for head, body in _sections().items()
               if heading_fragment.lower() in head.lower()]
    assert len(matches) == 1, f"no single README section containing {heading_fragment!r}"
    return matches[0]


def _section_block(heading_fragment: str, lang: str = "python") -> str:
    blocks = _blocks(_section_block_text(heading_fragment), lang)
    assert len(blocks) == 1, f"expected one ```{lang} block under {heading_fragment!r}"
    return blocks[0]


def test_readme_python_blocks_are_the_expected_ones():
    blocks = _blocks(_text(), "python")
    assert len(blocks) == 4
    assert blocks[0] == _section_block("estimator in five lines")
    assert blocks[1] == _section_block("stacks and fine-tuning")
    assert blocks[2] == _section_block("learned manifold")
    assert blocks[3] == _section_block("seed experiment")


def test_stacks_and_fine_tuning_block(capsys):
    code = _section_block("stacks and fine-tuning")
    ns: dict = {"__name__": "readme_stacks"}
    exec(compile(code, f"{README}:stacks", "exec"), ns)
    clf, stack = ns["clf"], ns["stack"]
    assert [e.n_components for e in stack.encoders_] == [32, 16]  # "64-32-16-10"
    assert [layer.weight.shape[0] for layer in clf.module_.layers] == [32, 16]
    assert clf.module_.head.weight.shape == (10, 16)
    error = float(capsys.readouterr().out)
    assert 0 <= error < 0.2


def test_learned_manifold_block_prints_what_the_prose_says(capsys):
    code = _section_block("learned manifold")
    ns: dict = {"__name__": "readme_manifold"}
    exec(compile(code, f"{README}:manifold", "exec"), ns)
    pattern = r"tangent error ([\d.]+) degrees, local dimension (\d+)"
    printed = re.fullmatch(pattern, capsys.readouterr().out.strip())
    stated = re.search(rf"This prints `{pattern}`", _sections()["The learned manifold"])
    assert printed and stated
    # the same figure up to float rounding across CPUs (summation order)
    assert float(printed.group(1)) == pytest.approx(float(stated.group(1)), abs=1.0)
    assert printed.group(2) == stated.group(2) == "2"
    angles = ns["angles"]
    assert angles.shape == (300,) and angles.mean() <= 12 and np.percentile(angles, 90) <= 15


def test_estimator_in_five_lines(monkeypatch):
    code = _section_block("estimator in five lines")
    assert len([ln for ln in code.splitlines() if ln.strip()]) <= 5
    monkeypatch.chdir(REPO)
    ns: dict = {"__name__": "readme_five_lines"}
    exec(compile(code, f"{README}:five-lines", "exec"), ns)
    codes, J, X, cae = ns["codes"], ns["J"], ns["X"], ns["cae"]
    assert isinstance(cae, ContractiveAutoencoder)
    # the shapes stated in the block's comment: "(1797, 8) codes, (5, 8, 64) Jacobians"
    m = re.search(r"#\s*\(([\d, ]+)\) codes, \(([\d, ]+)\) Jacobians", code)
    assert m, "the block's comment no longer states the shapes"
    stated_codes = tuple(int(v) for v in m.group(1).split(","))
    stated_J = tuple(int(v) for v in m.group(2).split(","))
    assert stated_codes == (1797, 8) and stated_J == (5, 8, 64)
    assert codes.shape == stated_codes
    assert J.shape == stated_J
    assert np.isfinite(codes).all() and np.isfinite(J).all()
    # and they are what the prose around it claims: codes in (0, 1) (sigmoid), J = d codes/dX
    assert codes.min() > 0 and codes.max() < 1
    eps = 1e-4
    x0 = X[:1].astype(np.float64)
    x1 = x0.copy()
    x1[0, 10] += eps
    fd = (cae.transform(x1) - cae.transform(x0))[0] / eps
    np.testing.assert_allclose(fd, J[0, :, 10], rtol=5e-2, atol=1e-4)


@pytest.mark.slow
def test_mnist_seed_block(monkeypatch, capsys):
    if not MNIST_DIR.is_dir():
        pytest.skip(f"MNIST not available: {MNIST_DIR} does not exist")
    code = _section_block("seed experiment")
    assert '"../shared/data/mnist"' in code
    monkeypatch.chdir(REPO)  # the block's path is relative to the repository root
    ns: dict = {"__name__": "readme_mnist"}
    exec(compile(code, f"{README}:mnist", "exec"), ns)
    printed = capsys.readouterr().out.split()
    assert len(printed) == 2, printed
    mse, jac = (float(v) for v in printed)
    # the same numbers, recomputed from the namespace
    cae, mnist = ns["cae"], ns["mnist"]
    assert mse == pytest.approx(-cae.score(mnist.X_test), rel=1e-6)
    assert jac == pytest.approx(float(cae.penalty(mnist.X_test).mean()), rel=1e-5)
    assert cae.n_epochs_ == 3 and cae.n_features_in_ == 784
    assert mse <= 0.0145, f"test MSE {mse:.5f} > 0.0145"
    assert jac <= 3.0, f"test mean ||J||_F^2 {jac:.4f} > 3.0"


def test_quickstart_commands():
    bash_blocks = _blocks(_text(), "bash")
    assert bash_blocks, "README has no ```bash block"
    lines = [ln.split("#", 1)[0].strip() for ln in bash_blocks[0].splitlines()]
    assert tuple(lines[:2]) == QUICKSTART
    # the first one is under "Quickstart"
    assert _section_block("quickstart", "bash") == bash_blocks[0]


def test_ci_runs_the_readme_test_command():
    ci = (REPO / ".ci" / "run").read_text(encoding="utf-8")
    lines = [ln.strip() for ln in ci.splitlines() if ln.strip() and not ln.startswith("#")]
    assert TEST_COMMAND in lines
    assert any(ln.startswith("./setup.sh") for ln in lines)
    # setup comes before the tests
    assert lines.index(TEST_COMMAND) > next(
        i for i, ln in enumerate(lines) if ln.startswith("./setup.sh"))
    assert QUICKSTART[1].endswith(TEST_COMMAND)


def test_quickstart_and_readme_commands_parse():
    """The quickstart, the inline MNIST command and every line starting with
    ``contractive`` in the README's fenced shell blocks parse with the real parser."""
    from contractive.cli import build_parser

    parser = build_parser()
    train = shlex.split(QUICKSTART[0].split("&&")[1])
    assert Path(train[0]).name == "contractive"
    args = parser.parse_args(train[1:])
    assert args.command == "train" and args.data == "digits"
    mnist = re.search(r"`(contractive train mnist[^`]*)`", " ".join(_text().split()))
    assert mnist, "README no longer shows the MNIST command line"
    args = parser.parse_args(shlex.split(mnist.group(1))[1:])
    assert args.data == "mnist" and args.n_components == 64
    assert args.learning_rate == 1e-3 and args.max_epochs == 3
    # every fence's language captured, so a closing fence is never taken for an opening one
    blocks = re.findall(r"^```(\w*)\n(.*?)^```", _text(), flags=re.S | re.M)
    shown = [line for lang, block in blocks if lang in ("", "sh", "bash")
             for line in block.replace("\\\n", " ").splitlines()
             if line.startswith("contractive ")]
    assert any("--tied-weights" in line for line in shown), shown  # the manifold figures
    for line in shown:
        for part in line.split("&&"):
            words = shlex.split(part, comments=True)
            if words[:1] == ["contractive"]:
                parser.parse_args(words[1:])


def test_readme_parameter_names_exist():
    """The parameters the README lists are the estimator's."""
    from contractive.activations import ACTIVATIONS

    para = re.search(r"Main parameters:(.*?)\n\n", _text(), flags=re.S)
    assert para
    tokens = set(re.findall(r"`([a-z_]+)`", para.group(1)))
    params = set(ContractiveAutoencoder().get_params())
    values = set(ACTIVATIONS) | {"linear", "mse", "bce", "auto", "cuda", "mps", "cpu"}
    assert tokens - params - values == set()
    assert {"n_components", "hidden_layer_sizes", "contractive_weight"} <= tokens


def test_deep_manifold_recipe_is_the_benchmarked_one():
    """The indented recipe under "The learned manifold" builds the encoder that
    ``benchmarks/tangents.py --wide`` runs as its deep encoder, and the README carries the
    benchmark's result tables line for line."""
    spec = importlib.util.spec_from_file_location("tangents_bench", BENCH / "tangents.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    (label,) = [k for k in bench.ENCODERS if k.startswith("100-512-256-8")]
    hidden, weight, epochs = bench.ENCODERS[label]
    text = _section_block_text("learned manifold")
    recipes = re.findall(r"^  ```python\n(.*?)^  ```", text, flags=re.S | re.M)
    assert len(recipes) == 1
    est = eval(textwrap.dedent(recipes[0]), {"ContractiveAutoencoder": ContractiveAutoencoder})
    p = est.get_params()
    assert (p["hidden_layer_sizes"], p["contractive_weight"], p["max_epochs"]) == \
        (hidden, weight, epochs)
    assert p["scaling"] == bench.ENCODER["scaling"]
    assert p["n_components"] == bench.ENCODER["n_components"]
    for name in ("tangents-wide.md", "tangents-heldout.md"):
        for line in (BENCH / "results" / name).read_text().strip().splitlines():
            assert line in text, f"README lacks {name}'s line {line!r}"
