"""models/catalogue.json stays in step with the runtime's default and the export command line."""

import json
import shlex

from paths import REPO

from spladerunner.loading import DEFAULT_MODEL

CATALOGUE = json.loads((REPO / "models" / "catalogue.json").read_text(encoding="utf-8"))


def test_the_runtime_default_is_the_catalogue_default():
    defaults = [m["id"] for m in CATALOGUE["models"] if m.get("default")]
    assert defaults == [DEFAULT_MODEL]


def test_every_entry_is_complete_and_its_convert_command_parses():
    from spladerunner_export.cli import _parser

    ids = [m["id"] for m in CATALOGUE["models"]]
    assert len(ids) == len(set(ids))
    for model in CATALOGUE["models"]:
        assert {"id", "family", "license", "layout", "convert", "runs_as_published"} <= model.keys(), model["id"]
        argv = shlex.split(model["convert"].replace("<snapshot folder>", "snapshot"))
        assert argv[0] == "spladerunner-export"
        args = argv[1:] if argv[1] in ("convert", "upgrade") else ["convert", *argv[1:]]
        _parser().parse_args(args)  # exits (SystemExit) on a command the CLI does not accept
