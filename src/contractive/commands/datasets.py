"""``contractive datasets``: what is known and cached; ``datasets download NAME``."""

from __future__ import annotations

import argparse

from ..data import DATASETS, IDX_DATASETS, search_path
from ..download import cached_status, download_dataset

EXAMPLE = """examples:
  contractive datasets
  contractive datasets download mnist
  contractive datasets download fashion-mnist --data-dir ~/data/fashion-mnist"""


def register(sub) -> None:
    p = sub.add_parser(
        "datasets", help="list the known datasets and where they are; download one",
        description="List the known datasets and where their files are, or download one.",
        epilog=EXAMPLE, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("action", nargs="?", choices=("list", "download"), default="list")
    p.add_argument("name", nargs="?", metavar="NAME", help="dataset to download")
    p.add_argument("--data-dir", metavar="DIR",
                   help="download into DIR instead of the user cache")
    p.add_argument("--force", action="store_true", help="download again even if intact")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    if args.action == "download":
        if args.name is None:
            raise ValueError(f"datasets download needs a NAME: {', '.join(IDX_DATASETS)}")
        if args.name not in IDX_DATASETS:
            valid = ", ".join(IDX_DATASETS)
            raise ValueError(f"dataset {args.name!r} cannot be downloaded; valid: {valid}")
        folder = download_dataset(args.name, args.data_dir, force=args.force)
        print(f"{args.name}: files verified in {folder}")
        return 0
    if args.name is not None:
        raise ValueError(f"unexpected {args.name!r}; did you mean: datasets download {args.name}")
    for flag, value in (("--data-dir", args.data_dir), ("--force", args.force)):
        if value:
            raise ValueError(f"{flag} applies to 'datasets download NAME', not to 'datasets list'")
    for name in DATASETS:
        if name == "digits":
            print(f"{name:14} scikit-learn's 8x8 digits: bundled, no download")
            continue
        folder, state = cached_status(name)
        where = next((f for f in search_path(name) if f != folder and all(
            (f / s).is_file() or (f / f"{s}.gz").is_file() for s in IDX_DATASETS[name].files)),
            None)
        shown = "complete (checked when read)" if state == "complete" else state
        line = f"{name:14} {IDX_DATASETS[name].title}\n{'':14} cache {folder}: {shown}"
        if where is not None:
            line += f"; also found in {where}"
        print(line)
    return 0
