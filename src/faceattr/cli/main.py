"""The ``faceattr`` command: train, evaluate, split, predict, export, ablate, audit, explain.

Errors a user can fix (bad file, missing weights, bad config) print one clear line and exit with status 2;
no stack trace unless ``--debug``.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NoReturn

log = logging.getLogger("faceattr")


def _add_train(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("train", help="train a multi-task network from a YAML config")
    p.add_argument("--config", "-c", help="experiment YAML (configs/*.yaml)")
    p.add_argument(
        "--set",
        "-o",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a setting, e.g. -o train.epochs=3 -o model.shared_stages=4 (repeatable)",
    )
    p.add_argument("--resume", action="store_true", help="continue the run in the same folder from its last epoch")
    p.add_argument("--name", help="run name (default: the config's name)")
    p.add_argument("--out-dir", help="folder for runs (default: the config's out_dir)")
    p.add_argument("--epochs", type=int)
    p.add_argument("--data", help="DATASET:PATH, e.g. utkface:/data/UTKFace")
    p.add_argument("--download-weights", action="store_true", help="allow downloading ImageNet weights")
    p.add_argument(
        "--stop-after-epoch",
        type=int,
        metavar="E",
        help="stop once epoch E is saved; --resume continues the run (for time-boxed machines)",
    )


def _cmd_train(a: argparse.Namespace) -> int:
    from faceattr.config import load_config

    overrides = list(a.overrides)
    if a.name:
        overrides.append(f"name={a.name}")
    if a.out_dir:
        overrides.append(f"out_dir={a.out_dir}")
    if a.epochs is not None:
        overrides.append(f"train.epochs={a.epochs}")
    if a.download_weights:
        overrides.append("model.allow_download=true")
    if a.data:
        if ":" not in a.data:
            from faceattr.errors import UsageError

            raise UsageError(f"--data must be DATASET:DIR (e.g. utkface:/data/UTKFace), got {a.data!r}")
        kind, path = a.data.split(":", 1)
        overrides += [f"data.dataset={kind}", f"data.root={path}"]
    cfg = load_config(a.config, overrides)
    from faceattr.training.loop import main

    if a.stop_after_epoch is not None and a.stop_after_epoch < 1:
        from faceattr.errors import UsageError

        raise UsageError(f"--stop-after-epoch must be 1 or more, got {a.stop_after_epoch}")
    summary = main(cfg, resume=a.resume, progress=not a.quiet, stop_after_epoch=a.stop_after_epoch)
    if int(os.environ.get("RANK", "0")) == 0:  # under torchrun, one summary
        print(json.dumps(summary, indent=1))
    return 0


def _add_split(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("split", help="compute an evaluation protocol's split file from a raw dataset folder")
    p.add_argument("data", help="utkface:DIR or fairface:DIR")
    p.add_argument("--out", required=True, help="CSV to write")
    p.add_argument("--wide-labels", help="FairFace: labels.csv of the wide set (its sources go to test)")
    p.add_argument(
        "--protocol",
        help="a published protocol instead of this project's: paplham:K (UTKFace, Paplham et al.'s split K, 0-4)",
    )


def _cmd_split(a: argparse.Namespace) -> int:
    from faceattr.data.sources import compute_protocol
    from faceattr.data.splits import write_split
    from faceattr.errors import UsageError
    from faceattr.safeio import OutputPlan

    if ":" not in a.data:
        raise UsageError(f"give the data as DATASET:DIR (utkface:DIR or fairface:DIR), got {a.data!r}")
    kind, path = a.data.split(":", 1)
    if kind not in ("utkface", "fairface"):
        raise UsageError(f"split: dataset must be utkface or fairface, got {kind!r}")
    if not Path(path).is_dir():
        raise UsageError(f"split: {path!r} is not a folder")
    out = OutputPlan([p for p in (a.wide_labels,) if p]).claim_file(a.out, "--out")
    df = compute_protocol(kind, path, a.wide_labels, a.protocol)
    write_split(df, out)
    print(json.dumps({"rows": len(df), **df["split"].value_counts().to_dict(), "out": a.out}))
    return 0


def _add_models(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("models", help="list the shipped models: tasks, classes, licence, training data, figures")
    p.add_argument("--json", action="store_true", help="print JSON instead of text")


def _cmd_models(a: argparse.Namespace) -> int:
    from faceattr import list_pretrained

    models = list_pretrained()
    if a.json:
        print(json.dumps(models, indent=1))
        return 0
    for m in models:
        print(f"{m['name']}{'  (default)' if m['default'] else ''}")
        print(f"  {m['summary']}")
        print(f"  licence: {m['licence']}{'' if m['commercial_use'] else ' (no commercial use)'}")
        tasks = "; ".join(
            f"{t['name']}: "
            + (
                ", ".join(t["classes"])
                if "classes" in t
                else f"{t['range'][0]}-{t['range'][1]}"
                if "range" in t
                else ", ".join(t["levels"])
            )
            for t in m["tasks"]
        )
        print(f"  tasks: {tasks}; input {m['input_size']} px; runtimes: {', '.join(m['runtimes'])}")
        print(f"  trained on: {'; '.join(m['trained_on'])}")
        for name, f in m["figures"].items():
            shown = ", ".join(f"{k} {v:.4g}" for k, v in f.items() if k not in ("faces", "tta_flip"))
            print(f"  {name} ({f['faces']} faces): {shown}")
        print()
    return 0


def _add_cache(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("cache", help="show (or --clear) the decoded-image cache in $FACEATTR_CACHE")
    p.add_argument("--clear", action="store_true", help="delete faceattr's cache files")


def _cmd_cache(a: argparse.Namespace) -> int:
    from faceattr.data.cache import cache_files, clear_cache, default_cache_dir

    d = default_cache_dir()
    if a.clear:
        n, size = clear_cache(d)
        print(f"removed {n} file(s), {size / 2**20:.1f} MiB, from {d}")
        return 0
    files = cache_files(d)
    size = sum(p.stat().st_size for p in files)
    print(f"{d}: {len(files)} file(s), {size / 2**20:.1f} MiB (faceattr cache --clear removes them)")
    return 0


# The command table, explicit: name -> (module, parser builder, runner). A module that fails to import is an
# error, never a silently missing command.
COMMANDS: dict[str, tuple[str, str, str]] = {
    "predict": ("faceattr.cli.predict", "_add_predict", "_run_predict"),
    "batch": ("faceattr.cli.batch", "_add_batch", "_run_batch"),
    "train": ("faceattr.cli.main", "_add_train", "_cmd_train"),
    "evaluate": ("faceattr.cli.evaluate", "_add", "_run"),
    "fit-calibration": ("faceattr.cli.evaluate", "_add_fit", "_run_fit"),
    "split": ("faceattr.cli.main", "_add_split", "_cmd_split"),
    "export": ("faceattr.cli.export", "_add_export", "_run_export"),
    "fit-alignment": ("faceattr.cli.export", "_add_calibrate", "_run_calibrate"),
    "ablate": ("faceattr.cli.evidence", "_add_ablate", "_run_ablate"),
    "claims": ("faceattr.cli.evidence", "_add_claims", "_run_claims"),
    "audit": ("faceattr.cli.evidence", "_add_audit", "_run_audit"),
    "explain": ("faceattr.cli.evidence", "_add_explain", "_run_explain"),
    "cache": ("faceattr.cli.main", "_add_cache", "_cmd_cache"),
    "models": ("faceattr.cli.main", "_add_models", "_cmd_models"),
    "serve": ("faceattr.cli.serve", "_add_serve", "_run_serve"),
    "video": ("faceattr.cli.serve", "_add_video", "_run_video"),
}


ALIASES = {"calibrate": "fit-alignment"}  # old command names that still work

# Two or three examples per command, shown at the end of its --help (tests/cli/test_cli.py runs them on real data).
EXAMPLES: dict[str, str] = {
    "predict": """faceattr predict photo.jpg                           # JSON lines on standard output
  faceattr predict photos/ --format csv -o faces.csv --draw annotated/
  faceattr predict crops/ --no-detect                  # inputs are already face crops""",
    "batch": """faceattr batch photos/ --out faces/                  # Parquet parts; pd.read_parquet("faces/")
  faceattr batch photos/ list.txt --out faces/ --shard 0/4 --workers 2
  faceattr batch photos/ --out faces/ --engine ray --actors 4""",
    "train": """faceattr train -c configs/utkface.yaml
  faceattr train -c configs/utkface.yaml -o train.epochs=3 -o model.shared_stages=4
  faceattr train -c configs/utkface.yaml --resume""",
    "evaluate": """faceattr evaluate --data utkface:../shared/data/utkface        # the shipped model, default path
  faceattr evaluate --model runs/x/best.safetensors --data utkface:DIR --split test --json
  faceattr evaluate --data fairface:DIR --label-map '{race: {East Asian: Asian}}' -o report/""",
    "fit-calibration": """faceattr fit-calibration --model runs/x/best.safetensors --data utkface:DIR
  faceattr fit-calibration --model runs/x/best.safetensors --data utkface:DIR --split val""",
    "split": """faceattr split utkface:/data/UTKFace -o split.csv
  faceattr split utkface:/data/UTKFace --protocol paplham:0 -o paplham-0.csv
  faceattr split fairface:/data/fairface -o split.csv --wide-labels wide/labels.csv""",
    "export": """faceattr export --model runs/x/best.safetensors -o model.onnx
  faceattr export --model runs/x/best.safetensors --int8 --calibration utkface:DIR -o model.onnx""",
    "fit-alignment": """faceattr fit-alignment --model runs/x/best.safetensors --data utkface:DIR
  faceattr fit-alignment --model runs/x/best.safetensors --data utkface:DIR --detector dlib""",
    "ablate": """faceattr ablate -c configs/ablation-utkface.yaml
  faceattr ablate -c configs/ablation-utkface.yaml --report-only""",
    "claims": """faceattr claims -c configs/claims-utkface.yaml -c configs/claims-fairface.yaml
  faceattr claims -c configs/claims-utkface.yaml -o results/claims.md --no-timing""",
    "audit": """faceattr audit --data utkface:../shared/data/utkface --split test -o audit/
  faceattr audit --model runs/x/best.safetensors --data fairface:DIR -o audit/""",
    "explain": """faceattr explain photo.jpg -o cams/
  faceattr explain photo.jpg --task age -o cams/ --average-data utkface:DIR""",
    "models": """faceattr models
  faceattr models --json""",
    "cache": """faceattr cache
  faceattr cache --clear""",
    "serve": """faceattr serve                                       # http://127.0.0.1:8000/
  faceattr serve --port 8080 --disable-task race --max-inflight 32""",
    "video": """faceattr video clip.mp4 -o annotated.mp4
  faceattr video clip.mp4 --tracks tracks.jsonl --detect-every 3
  faceattr video 0 -o webcam.mp4                       # a webcam""",
}


class OneLineParser(argparse.ArgumentParser):
    """A usage error is one line on standard error and exit status 2 (``--help`` shows the usage)."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


class _HelpFormatter(argparse.RawDescriptionHelpFormatter):
    """Examples kept as written; every option's default shown (unless it is none, or the help says it)."""

    def _get_help_string(self, action: argparse.Action) -> str:
        h = action.help or ""
        if (
            action.default in (None, False, argparse.SUPPRESS)
            or "default" in h
            or not (action.option_strings or action.nargs in ("?", "*"))
        ):
            return h
        return h + " (default: %(default)s)"


def _alias(p: argparse.ArgumentParser, dest: str, first: str, *more: str) -> None:
    """Give the option stored in ``dest`` the canonical name ``first`` (shown first) and the other spellings."""
    for act in p._actions:
        if act.dest == dest and act.option_strings:
            names = [first, *more]
            for s in names:
                if s not in p._option_string_actions:
                    p._option_string_actions[s] = act
            act.option_strings = [s for s in names if p._option_string_actions.get(s) is act] + [
                s for s in act.option_strings if s not in names
            ]


# Help for the options several commands share, given once (a command's own help text wins).
COMMON_HELP = {
    "checkpoint": "checkpoint (.safetensors with its .json, or a run folder) or .onnx model file",
    "split": "which split of the dataset's protocol",
    "detector": "face detector: auto, yunet-ort, yuface, dlib, dlib-cnn, yunet or yunet-dlib (auto: yunet-ort, the "
    "YuNet network shipped with faceattr; yunet when a YuNet file is given)",
    "yunet_model": "OpenCV YuNet ONNX file (for --detector yunet / yunet-dlib)",
    "min_score": "drop detections scored below this (YuNet: confidence 0..1; dlib: SVM margin)",
    "max_pixels": "refuse images with more pixels than this (a decompression bomb guard)",
    "format": "output format",
    "batch_size": "faces per network batch",
    "epochs": "number of epochs (overrides train.epochs)",
    "calibration_size": "faces used to fit the INT8 quantisation ranges",
    "out": "where to write the output",
    "limit": "use a seeded subset of this many faces",
    "n_boot": "bootstrap resamples for the confidence intervals",
    "no_detect": "inputs are already face crops: no detection or alignment",
    "average_n": "faces of --average-data averaged into the mean map per task",
    "port": "TCP port to listen on (1-65535)",
}


def harmonise(sub: argparse._SubParsersAction) -> None:
    """One vocabulary across commands: ``--model`` (``--checkpoint`` kept), ``-o/--out`` (``-O/--output`` kept),
    defaults shown, examples at the end of every command's help."""
    for name, p in sub.choices.items():
        if name in ALIASES:
            continue
        p.formatter_class = _HelpFormatter
        if p.description and "\n" not in p.description:
            import textwrap

            p.description = textwrap.fill(p.description, 100, break_on_hyphens=False)
        p.epilog = "examples:\n  " + EXAMPLES[name] if name in EXAMPLES else p.epilog
        dests = {a.dest for a in p._actions}
        for act in p._actions:
            if act.help is None and act.dest in COMMON_HELP:
                act.help = COMMON_HELP[act.dest]
        if "checkpoint" in dests and "model" not in dests:
            _alias(p, "checkpoint", "--model", "--checkpoint")
        if "out" in dests:
            _alias(p, "out", "--out", "-o")


def _command(name: str, which: int) -> Any:
    import importlib

    mod, add, run = COMMANDS[ALIASES.get(name, name)]
    return getattr(importlib.import_module(mod), (add, run)[which - 1])


def build_parser() -> argparse.ArgumentParser:
    ap = OneLineParser(
        prog="faceattr",
        description="Heterogeneous face attribute estimation (age, gender, race) with one deep multi-task network.",
    )
    ap.add_argument("--debug", action="store_true", help="show full stack traces")
    ap.add_argument("--quiet", "-q", action="store_true", help="no progress bars")
    ap.add_argument("--log-level", default="INFO", help="DEBUG, INFO, WARNING or ERROR")
    from faceattr import __version__

    ap.add_argument("--version", action="version", version=f"faceattr {__version__}")
    sub = ap.add_subparsers(dest="command", required=True, metavar="COMMAND", parser_class=OneLineParser)
    for name in COMMANDS:
        _command(name, 1)(sub)
    harmonise(sub)
    return ap


def _sigterm_as_interrupt() -> None:
    """SIGTERM ends a run like Ctrl-C: outputs in progress are left as ``.partial`` files, targets untouched."""
    import signal
    import threading

    if threading.current_thread() is threading.main_thread():

        def handler(signum: int, frame: object) -> None:
            raise KeyboardInterrupt

        signal.signal(signal.SIGTERM, handler)


def main(argv: Sequence[str] | None = None) -> int:
    ap = build_parser()
    a = ap.parse_args(argv)
    if argv is None:  # the console command (tests call main() with arguments and keep their own handlers)
        _sigterm_as_interrupt()
    logging.basicConfig(
        level=getattr(logging, str(a.log_level).upper(), logging.INFO),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    try:
        return int(_command(a.command, 2)(a))
    except KeyboardInterrupt:
        print("faceattr: interrupted", file=sys.stderr)
        return 130
    except Exception as e:  # noqa: BLE001
        if a.debug or not _is_user_error(e):
            raise
        msg = " ".join(str(e).split())  # one line, whatever the message holds
        print(f"faceattr {a.command}: error: {msg}", file=sys.stderr)
        return 2


def _is_user_error(e: BaseException) -> bool:
    from faceattr.errors import is_user_error

    return is_user_error(e)


if __name__ == "__main__":  # run as `python -m faceattr.cli.main`: use the importable module's command table
    from faceattr.cli.main import main as _main

    sys.exit(_main())
