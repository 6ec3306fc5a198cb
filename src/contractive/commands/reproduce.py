"""``contractive reproduce rifai2011``: the paper's MNIST Table 1, reproduced and resumable.

Pre-trains a CAE (grid over the contractive weight), a CAE+H, an AE with weight decay and a
plain AE (1000 sigmoid units, tied weights, sigmoid decoder, cross-entropy), fine-tunes each
into a 784-1000-10 MLP (dropout and adversarial training, neither of them in the paper;
both on every family), adds the same MLP from random weights and, with --stacked-weights,
the stacked CAE-2 (a second CAE on the chosen CAE's codes, fine-tuned as 784-1000-1000-10)
and, with --tangent-weights, MTC (the chosen CAE fine-tuned flat along its tangents),
chooses every family's hyper-parameters on the validation error, and writes results.json,
table.md and figures (contraction curves, spectra) to --out. Rerun the same command to
resume a stopped run; a rerun that changes only fine-tuning options keeps the pre-trained
models."""

from __future__ import annotations

import argparse
import sys

from ..reproduce import Experiment, Protocol, WorkerDied, format_table, usable_cpus

EXAMPLE = """examples:
  contractive reproduce rifai2011 --out runs/rifai2011
  contractive reproduce rifai2011 --quick --out /tmp/quick
  contractive reproduce rifai2011 --weights 0.05,0.1,0.2 --device cuda --out runs/r2
  contractive reproduce rifai2011 --stacked-weights 0.1 --out runs/rifai2011   # adds CAE-2
  contractive reproduce rifai2011 --tangent-weights 0.3 --out runs/rifai2011   # adds MTC
  contractive reproduce rifai2011 --finetune-adversarial-weight 0 --out runs/r0  # dropout
                                                      # only, no adversarial term
  contractive reproduce rifai2011 --finetune-seeds 3 --out runs/rifai2011  # means of 3
                                                      # fine-tunings (keeps seed 0's)"""
EXPERIMENTS = ("rifai2011",)
#: the most processes ``--jobs auto`` starts: the default run has 6 configurations, and
#: each process holds its own copy of MNIST
MAX_AUTO_JOBS = 4


def _floats(text: str) -> tuple[float, ...]:
    try:
        items = text.split(",")
        if len(items) > 1 and not items[-1].strip():
            items = items[:-1]  # a trailing comma; an empty item inside is refused
        values = tuple(float(v) for v in items)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a comma-separated list of numbers") from None
    if not values:
        raise argparse.ArgumentTypeError("needs at least one number")
    return values


def _jobs(text: str) -> int | str:
    if text.strip().lower() == "auto":
        return "auto"
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not 'auto' or a whole number >= 1")
    return value


def default_jobs(device, quick: bool = False) -> int:
    """``--jobs auto``: on a CPU one process per core (at most ``MAX_AUTO_JOBS``, each with
    one torch thread or more); on an accelerator, or in quick mode (where starting a process
    takes longer than a configuration), 1."""
    if device.type != "cpu" or quick:
        return 1
    return min(usable_cpus(), MAX_AUTO_JOBS)


def _floats_or_none(text: str) -> tuple[float, ...]:
    return () if text.strip().lower() == "none" else _floats(text)


def register(sub) -> None:
    p = sub.add_parser(
        "reproduce", help="reproduce a paper's experiment (rifai2011: MNIST Table 1)",
        description=__doc__.split("\n\n")[1], epilog=EXAMPLE,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("experiment", choices=EXPERIMENTS, help="the experiment")
    p.add_argument("--out", default="runs/rifai2011", metavar="DIR",
                   help="output folder; rerunning into it resumes (default runs/rifai2011)")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N or mps")
    p.add_argument("--data-dir", metavar="DIR", help="folder with the MNIST files")
    p.add_argument("--weights", type=_floats, metavar="W,...",
                   help="contractive weights tried, paper scale (default 0.1,0.3)")
    p.add_argument("--higher-order-weights", type=_floats, metavar="G,...",
                   help="CAE+H weights tried, paper scale (default 1)")
    p.add_argument("--weight-decays", type=_floats, metavar="WD,...",
                   help="AE+wd weight decays tried, paper scale (default 0.01)")
    p.add_argument("--stacked-weights", type=_floats_or_none, metavar="W2,...",
                   help="CAE-2 second-layer weights tried, paper scale (default none: CAE-2 "
                        "left out; with adversarial fine-tuning it would add about 70-90 "
                        "minutes on a 2-core CPU, estimated)")
    p.add_argument("--tangent-weights", type=_floats_or_none, metavar="B,...",
                   help="MTC (the chosen CAE fine-tuned flat along its tangents) weights beta "
                        "tried (default none: MTC left out)")
    p.add_argument("--pretrain-epochs", type=int, metavar="INT")
    p.add_argument("--finetune-epochs", type=int, metavar="INT")
    p.add_argument("--finetune-dropout", type=float, metavar="FLOAT",
                   help="dropout rate on the hidden layer in fine-tuning (default 0.5; 0: none)")
    p.add_argument("--finetune-adversarial-weight", type=float, metavar="FLOAT",
                   help="adversarial training in every fine-tuning: this share of the loss at "
                        "a fast-gradient step from each image (default 0.5; 0: off, dropout "
                        "only; the paper used neither)")
    p.add_argument("--finetune-adversarial-epsilon", type=float, metavar="FLOAT",
                   help="that step's size, in pixel units (default 1.0)")
    p.add_argument("--finetune-adversarial-norm", choices=("inf", "l2"),
                   help="the step: eps * sign(gradient) (inf) or eps * gradient / its L2 norm "
                        "(l2, default)")
    p.add_argument("--finetune-seeds", type=int, metavar="INT",
                   help="fine-tunings of each configuration, with seeds SEED, SEED+1, ...; "
                        "the table gives their mean valid and test errors, and the choice "
                        "uses the mean (default 1; each adds a configuration's fine-tuning "
                        "time; a rerun with more keeps the ones done)")
    p.add_argument("--seed", type=int, metavar="INT")
    p.add_argument("--jobs", type=_jobs, default="auto", metavar="N",
                   help="configurations trained at a time, each in its own process (default "
                        f"auto: on a CPU one per core, at most {MAX_AUTO_JOBS}, each with "
                        "cores/N torch threads; 1 on a GPU and with --quick)")
    p.add_argument("--quick", action="store_true",
                   help="a small subset and few epochs: checks the pipeline, not the number")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    if args.finetune_adversarial_weight == 0 and (args.finetune_adversarial_epsilon is not None
                                                  or args.finetune_adversarial_norm is not None):
        raise ValueError("--finetune-adversarial-epsilon and --finetune-adversarial-norm need "
                         "--finetune-adversarial-weight above 0 (0 turns adversarial training "
                         "off); leave them out or give a weight above 0")
    overrides = {name: value for name, value in (
        ("contractive_weights", args.weights),
        ("higher_order_weights", args.higher_order_weights),
        ("weight_decays", args.weight_decays),
        ("stacked_weights", args.stacked_weights),
        ("tangent_weights", args.tangent_weights),
        ("pretrain_epochs", args.pretrain_epochs),
        ("finetune_epochs", args.finetune_epochs),
        ("finetune_dropout", args.finetune_dropout),
        ("finetune_adversarial_weight", args.finetune_adversarial_weight),
        ("finetune_adversarial_epsilon", args.finetune_adversarial_epsilon),
        ("finetune_adversarial_norm", args.finetune_adversarial_norm),
        ("finetune_seeds", args.finetune_seeds),
        ("seed", args.seed),
    ) if value is not None}
    protocol = Protocol.quick_protocol(**overrides) if args.quick else Protocol(**overrides)
    from ..training import resolve_device

    device = resolve_device(args.device)  # a bad --device fails before anything is written
    jobs = default_jobs(device, protocol.quick) if args.jobs == "auto" else args.jobs
    if not args.out.strip():
        raise ValueError("--out is empty; name the folder for the run (default runs/rifai2011)")
    try:
        summary = Experiment(args.out, protocol, device=args.device, data_dir=args.data_dir,
                             jobs=jobs).run()
    except WorkerDied as exc:  # not the input's fault: one line, exit 1
        print(f"contractive reproduce: error: {exc}", file=sys.stderr)
        return 1
    print()
    print(format_table(summary))
    print(f"wrote {args.out}/results.json, table.md, contraction_curves.png and spectra.png")
    return 0
