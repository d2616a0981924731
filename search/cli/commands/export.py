"""``hpsearch export``: a trial's model trained again and saved as a ``.keras`` file (:mod:`search.train.export`)."""

from __future__ import annotations

from search.cli.args import storage_parent, study_parent, whole_number
from search.cli.commands import Command, quiet_libraries

__all__ = ["Export"]


class Export(Command, name="export", help="train a trial's model again (the best by default) and save it as a .keras file",
             parents=(study_parent, storage_parent)):
    """Train the study's best complete trial (or --trial N) again with its parameters, on the
    study's data and settings, up to its best epoch, and save the model to --out, to load with
    keras.saving.load_model. With the study's --seed the weights are the trial's own; without,
    a new training of the same configuration. Writes nothing to the study.

    examples:
      hpsearch export --study getting_started.build_model --data images.npz --out best.keras
      hpsearch export --study mnist-learning-rate --trial 7 --out trial7.keras --format json
    """

    relay_signals = True  # it trains a model in this process (search/cli/signals.py)

    def add_arguments(self, parser) -> None:
        parser.add_argument("--out", default="best.keras", metavar="FILE", help="the .keras file to write (default: %(default)s)")
        parser.add_argument("--trial", type=whole_number, metavar="N", help="the trial to export (default: the best complete one)")
        parser.add_argument("--data", metavar="PATH", help="the study's data, as its workers were given it (default: $HPSEARCH_DATA, else Keras's download)")
        parser.add_argument("--model", metavar="SPEC", help="where the study's model file lies on this machine, if not where the study says (its code must be the same)")
        parser.add_argument("--format", choices=("text", "json"), default="text", help="what is printed on stdout (default: %(default)s)")

    def run(self, args) -> int:
        import json

        from search.train.export import export_model

        quiet_libraries()
        done = export_model(args.storage, args.study, args.out, trial_number=args.trial, data_path=args.data, model_flag=args.model)
        print(json.dumps(done.to_dict()) if args.format == "json" else done.text())
        return 0
