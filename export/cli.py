"""`spladerunner-export`: convert a checkpoint, upgrade a foreign logits graph, or make a test model.

    spladerunner-export [convert] CHECKPOINT OUT
    spladerunner-export convert --query-checkpoint Q --document-checkpoint D OUT
    spladerunner-export upgrade FOLDER [OUT]
    spladerunner-export test-model OUT [--tokenizer T] [--calibration-texts FILE] [--arch bert|distilbert]
                                       [--size tiny|base] [--sparsembed]
    spladerunner-export sparsembed CHECKPOINT OUT [--query-k K] [--document-k K] [--softmax-axis positions|terms]

Exits 1 when the parity check fails (the folder is still written, with its report) or on an error
(one line on stderr), and 2 on bad arguments or when the `export` extra is not installed.
"""

from __future__ import annotations

import argparse
import importlib.util
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from spladerunner.errors import SpladerunnerError

if TYPE_CHECKING:
    from spladerunner.manifest import Manifest

COMMANDS = ("convert", "upgrade", "test-model", "sparsembed")
# Top-level modules of the `export` extra each command needs (`upgrade` runs on onnx + onnxruntime).
# This module imports none of them, so a runtime-only install gets the hint instead of an ImportError.
EXTRA_MODULES = ("torch", "transformers", "optimum", "onnx")
NEEDS = {"upgrade": ("onnx",)}
INSTALL_HINT = 'pip install "spladerunner[export]"'


def missing_modules(command: str | None) -> list[str]:
    """The extra's modules that `command` (None: any command) needs and this Python cannot import."""
    return [name for name in NEEDS.get(command or "", EXTRA_MODULES) if importlib.util.find_spec(name) is None]


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if not args or args[0] not in (*COMMANDS, "-h", "--help"):
        args.insert(0, "convert")
    missing = missing_modules(args[0] if args[0] in COMMANDS else None)
    if missing:
        print(f"spladerunner-export needs the export extra, which is not installed (missing: {', '.join(missing)}). "
              f"Install it with:\n    {INSTALL_HINT}", file=sys.stderr)
        return 2
    parsed = _parser().parse_args(args)
    try:
        return _run(parsed)
    except (SpladerunnerError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1


def _run(parsed: argparse.Namespace) -> int:
    from spladerunner_export.build import ExportOptions
    from spladerunner_export.parity import Thresholds

    if parsed.command == "test-model":
        from spladerunner_export.calibration import BUILTIN, CalibrationTexts
        from spladerunner_export.factory import make_test_model

        texts = BUILTIN if parsed.calibration_texts is None else CalibrationTexts.read(parsed.calibration_texts)
        folder = make_test_model(parsed.out, arch=parsed.arch, size=parsed.size, seed=parsed.seed,
                                 tokenizer=parsed.tokenizer, calibration=texts)
        if parsed.sparsembed:
            from spladerunner_export.sparsembed import add_sparsembed_head

            add_sparsembed_head(folder, seed=parsed.seed)
        print((folder / "calibration.json").read_text(encoding="utf-8"), end="")
        return 0
    if parsed.command == "sparsembed":
        from spladerunner_export.sparsembed import export_sparsembed

        k = {mode: value for mode, value in (("query", parsed.query_k), ("document", parsed.document_k)) if value}
        manifest = export_sparsembed(parsed.out, parsed.checkpoint, revision=parsed.revision, k=k,
                                     softmax_axis=parsed.softmax_axis, precisions=tuple(parsed.precisions.split(",")))
        _print_report(manifest)
        return 0 if manifest.parity["passed"] else 1
    options = ExportOptions(
        pooling=parsed.pooling, top_k=parsed.top_k, precisions=tuple(parsed.precisions.split(",")),
        max_length={"query": parsed.query_max_length, "document": parsed.document_max_length},
        fuse_attention=not parsed.unfused_attention,
        ship=tuple(parsed.ship.split(",")) if parsed.ship else None,
        thresholds=Thresholds(fp32_max_abs_diff=parsed.max_abs_diff, int8_min_cosine=parsed.min_int8_cosine,
                              fp16_min_cosine=parsed.min_fp16_cosine, min_tolerant_overlap_at_10=parsed.min_overlap,
                              min_score_pearson=parsed.min_pearson))
    if parsed.command == "upgrade":
        from spladerunner_export.upgrade import upgrade_folder

        manifest = upgrade_folder(parsed.folder, parsed.out, graph=parsed.graph, revision=parsed.revision,
                                  options=options)
    else:
        from spladerunner_export.convert import export_checkpoint

        if (parsed.query_checkpoint is None) != (parsed.document_checkpoint is None):
            _parser().error("--query-checkpoint and --document-checkpoint go together")
        dual = parsed.query_checkpoint is not None
        if len(parsed.paths) != (1 if dual else 2):
            _parser().error("usage: convert CHECKPOINT OUT, or convert --query-checkpoint Q "
                            "--document-checkpoint D OUT")
        manifest = export_checkpoint(parsed.paths[-1], None if dual else parsed.paths[0],
                                     query_checkpoint=parsed.query_checkpoint,
                                     document_checkpoint=parsed.document_checkpoint, revision=parsed.revision,
                                     options=options)
    _print_report(manifest)
    return 0 if manifest.parity["passed"] else 1


def _print_report(manifest: Manifest) -> None:
    """One line per graph: the verdict, retrieval agreement on the built-in set, then the parity-text figures."""
    for key, report in manifest.parity["graphs"].items():
        for precision, result in report.items():
            if not result["ran"]:
                print(f"{key} {precision}: did not run ({result['error']})")
                continue
            verdict = "ok" if result["passed"] else "FAILED"
            retrieval = (f"overlap@10={result['tolerant_overlap_at_10']:.3f} (plain {result['overlap_at_10']:.3f}, "
                         f"worst query {result['worst_overlap_at_10']:.1f}) pearson={result['score_pearson']:.4f} "
                         f"spearman={result['score_spearman']:.4f}  " if "score_pearson" in result else "")
            print(f"{key} {precision} {result['path']}: {verdict}  {retrieval}"
                  f"max_abs_diff={result['max_abs_diff']:.2e} min_cosine={result['min_cosine']:.6f} "
                  f"min_jaccard={result['min_jaccard']:.3f} min_top50={result['min_top50_overlap']:.3f} "
                  f"active={result['mean_active']:.1f}")
    failed = sorted({precision for report in manifest.parity["graphs"].values()
                     for precision, result in report.items() if not result["passed"]})
    if failed:
        print(f"parity FAILED for {', '.join(failed)}: the runtime will not choose "
              f"{'it' if len(failed) == 1 else 'them'} unless asked (precision=)", file=sys.stderr)
    else:
        print("parity passed", file=sys.stderr)


def _parser() -> argparse.ArgumentParser:
    from spladerunner.manifest import DEFAULT_MAX_LENGTH
    from spladerunner_export.calibration import DEFAULT_TOKENIZER
    from spladerunner_export.parity import Thresholds

    parser = argparse.ArgumentParser(prog="spladerunner-export", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)
    convert = commands.add_parser("convert", help="torch checkpoint(s) -> model folder")
    convert.add_argument("paths", nargs="+", metavar="CHECKPOINT OUT", help="checkpoint (folder or hub id), out")
    convert.add_argument("--query-checkpoint", help="efficient SPLADE: the query encoder's checkpoint")
    convert.add_argument("--document-checkpoint", help="efficient SPLADE: the document encoder's checkpoint")
    upgrade = commands.add_parser("upgrade", help="foreign logits graph + tokenizer.json -> model folder (no torch)")
    upgrade.add_argument("folder", help="folder (or hub id) with model.onnx or onnx/model.onnx and tokenizer.json")
    upgrade.add_argument("out", type=Path, nargs="?",
                         help="output folder; for a hub id by default the runtime's upgrade cache, where "
                              "Expander(hub id) finds it ($SPLADERUNNER_CACHE/upgraded/<org>--<name>/<commit>)")
    upgrade.add_argument("--graph", help="the logits graph, relative to the folder")
    for command in (convert, upgrade):
        command.add_argument("--revision", help="hub revision (branch, tag or commit)")
        command.add_argument("--pooling", choices=("max", "sum"), default="max",
                             help="max: SPLADE v2/++ (default); sum: SPLADE v1")
        command.add_argument("--top-k", type=int, help="emit top_ids/top_weights [batch, K] from the graph")
        command.add_argument("--precisions", default="fp32,int8", help="comma list of fp32,int8,fp16")
        command.add_argument("--ship", metavar="PRECISIONS",
                             help="comma list of the precisions kept in the folder (default: all built); the "
                                  "others are built and judged by the parity report, then removed")
        command.add_argument("--query-max-length", type=int, default=DEFAULT_MAX_LENGTH["query"])
        command.add_argument("--document-max-length", type=int, default=DEFAULT_MAX_LENGTH["document"])
        command.add_argument("--unfused-attention", action="store_true",
                             help="keep self-attention as separate ops (faster int8 documents, slower queries)")
        defaults = Thresholds()
        command.add_argument("--max-abs-diff", type=float, default=defaults.fp32_max_abs_diff,
                             help="fp32 parity bound")
        command.add_argument("--min-int8-cosine", type=float, default=defaults.int8_min_cosine,
                             help="int8 sanity bound on the parity texts (default: %(default)s)")
        command.add_argument("--min-fp16-cosine", type=float, default=defaults.fp16_min_cosine,
                             help="fp16 sanity bound on the parity texts (default: %(default)s)")
        command.add_argument("--min-overlap", type=float, default=defaults.min_tolerant_overlap_at_10,
                             help="every graph: mean top-10 overlap with the reference on the built-in retrieval "
                                  "set, near-ties counted as agreeing (default: %(default)s)")
        command.add_argument("--min-pearson", type=float, default=defaults.min_score_pearson,
                             help="every graph: mean per-query Pearson correlation of the retrieval set's scores "
                                  "with the reference's (default: %(default)s)")
    test_model = commands.add_parser("test-model", help="random-init, sparsity-calibrated checkpoint for tests")
    test_model.add_argument("out", type=Path)
    test_model.add_argument("--arch", choices=("bert", "distilbert"), default="bert")
    test_model.add_argument("--size", choices=("tiny", "base"), default="tiny")
    test_model.add_argument("--seed", type=int, default=0)
    test_model.add_argument("--tokenizer", default=DEFAULT_TOKENIZER,
                            help="BERT WordPiece tokenizer: a tokenizer.json, a folder holding one, or a hub id "
                                 "(default: %(default)s, through the HF cache)")
    test_model.add_argument("--calibration-texts", type=Path, metavar="FILE",
                            help='JSON {"queries": [...], "passages": [...]} to calibrate sparsity on '
                                 "(default: a built-in set)")
    test_model.add_argument("--sparsembed", action="store_true", help="add a random linear.pt and metadata.json")
    sparsembed = commands.add_parser("sparsembed", help="SparsEmbed checkpoint (MLM + linear.pt) -> model folder")
    sparsembed.add_argument("checkpoint", help="folder or hub id with linear.pt (and metadata.json)")
    sparsembed.add_argument("out", type=Path)
    sparsembed.add_argument("--revision", help="hub revision (branch, tag or commit)")
    sparsembed.add_argument("--query-k", type=int, help="terms kept per query (default: query max length)")
    sparsembed.add_argument("--document-k", type=int, help="terms kept per document (default: document max length)")
    sparsembed.add_argument("--softmax-axis", choices=("positions", "terms"),
                            help="attention softmax over positions (paper, default) or selected terms")
    sparsembed.add_argument("--precisions", default="fp32,int8", help="comma list of fp32,int8")
    return parser
