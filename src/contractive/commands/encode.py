"""``contractive encode`` / ``contractive reconstruct``: apply a run's model to DATA.

The output format follows the extension of ``-o``: ``.npy``, ``.csv`` or ``.tsv`` (with a
header), written atomically. The model applies the scaling it was trained with.
"""

from __future__ import annotations

import argparse
import os
import warnings
from pathlib import Path

from ..files import write_array
from ..runs import read_run_config
from ._common import add_data_options, is_model_folder, model_and_rows

EXAMPLES = {
    "encode": """examples:
  contractive encode runs/digits digits -o codes.npy
  contractive encode runs/mine data.csv --label-column label -o codes.csv""",
    "reconstruct": """examples:
  contractive reconstruct runs/digits digits --split test -o recon.npy
  contractive reconstruct runs/mine data.csv -o recon.csv""",
}


def register(sub) -> None:
    for name, what in (("encode", "codes f(x)"), ("reconstruct", "reconstructions g(f(x))")):
        p = sub.add_parser(
            name, help=f"write the {what} of DATA",
            description=f"Write the {what} of DATA with the model of RUN_DIR.",
            epilog=EXAMPLES[name], formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        p.add_argument("run_dir", metavar="RUN_DIR",
                       help="a run folder, or a model folder written by save() (a "
                       "ContractiveAutoencoder's or a StackedContractiveAutoencoder's)")
        p.add_argument("data", metavar="DATA", help="dataset name or data file")
        p.add_argument("-o", "--output", required=True, metavar="FILE",
                       help="output file: .npy, .csv or .tsv (an existing file is "
                       "replaced; never DATA itself or a file in RUN_DIR)")
        add_data_options(p)
        p.set_defaults(run=run, what=name)


def _same_file(a: str | Path, b: str | Path) -> bool:
    try:
        return os.path.samefile(a, b)  # hard and symbolic links too
    except OSError:  # either is missing
        return False


def _check_output(output: str, run_dir: str, data: str | None) -> None:
    """``-o`` must name a .npy/.csv/.tsv file that is neither DATA, nor the run's own data
    file, nor inside RUN_DIR (whose files the run needs); another existing file is
    replaced."""
    if not output.lower().endswith((".npy", ".csv", ".tsv")):
        raise ValueError(f"-o {output}: unknown output format; use .npy, .csv or .tsv")
    target = Path(output).resolve()
    if data is not None and _same_file(data, target):
        raise ValueError(f"-o {output}: is DATA itself, which would be overwritten; name "
                         "another file")
    if is_model_folder(run_dir):
        what, source = "model", {}
    else:
        try:
            what, source = "run", read_run_config(run_dir)["data"]
        except ValueError:  # neither a run nor a model: model_and_rows says so
            what, source = None, {}
    if source.get("kind") == "file" and _same_file(source["path"], target):
        raise ValueError(f"-o {output}: is the data file the run in {run_dir} was trained on, "
                         "which it needs; name another file")
    folder = Path(run_dir).resolve()
    if folder.is_file():  # a model's model.json or stack.json, named
        folder = folder.parent
    if what is not None and folder in target.parents:
        raise ValueError(f"-o {output}: lies inside the {what} folder {run_dir}, whose files "
                         f"the {what} needs; name a file outside it")
    if target.is_dir():
        raise ValueError(f"-o {output}: is a folder; name a file")


def run(args: argparse.Namespace) -> int:
    _check_output(args.output, args.run_dir, args.data)
    est, rows = model_and_rows(args, with_training_data=False, model_folder=True)
    X, described = rows.X, rows.described
    with warnings.catch_warnings():  # a model fitted on a DataFrame warns about a plain
        warnings.filterwarnings(  # array; its columns were checked by name already
            "ignore", message="X does not have valid feature names")
        if args.what == "encode":
            out, header = est.transform(X), list(est.get_feature_names_out())
        else:
            out = (est.reconstruct(X) if hasattr(est, "reconstruct")  # a stack: through each
                   else est.inverse_transform(est.transform(X)))
            header = rows.feature_names or [f"x{i}" for i in range(X.shape[1])]
    write_array(args.output, out, header=header)
    print(f"wrote {args.output}: {out.shape[0]} rows x {out.shape[1]} columns ({described})")
    return 0
