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
from typing import Any

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
    df = compute_protocol(kind, path, a.wide_labels)
    write_split(df, out)
    print(json.dumps({"rows": len(df), **df["split"].value_counts().to_dict(), "out": a.out}))
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
    "batch": ("faceattr.cli.predict", "_add_batch", "_run_batch"),
    "train": ("faceattr.cli.main", "_add_train", "_cmd_train"),
    "evaluate": ("faceattr.cli.evaluate", "_add", "_run"),
    "fit-calibration": ("faceattr.cli.evaluate", "_add_fit", "_run_fit"),
    "split": ("faceattr.cli.main", "_add_split", "_cmd_split"),
    "export": ("faceattr.cli.predict", "_add_export", "_run_export"),
    "calibrate": ("faceattr.cli.predict", "_add_calibrate", "_run_calibrate"),
    "ablate": ("faceattr.cli.evidence", "_add_ablate", "_run_ablate"),
    "claims": ("faceattr.cli.evidence", "_add_claims", "_run_claims"),
    "audit": ("faceattr.cli.evidence", "_add_audit", "_run_audit"),
    "explain": ("faceattr.cli.evidence", "_add_explain", "_run_explain"),
    "cache": ("faceattr.cli.main", "_add_cache", "_cmd_cache"),
    "serve": ("faceattr.cli.serve", "_add_serve", "_run_serve"),
    "video": ("faceattr.cli.serve", "_add_video", "_run_video"),
}


def _command(name: str, which: int) -> Any:
    import importlib

    mod, add, run = COMMANDS[name]
    return getattr(importlib.import_module(mod), (add, run)[which - 1])


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(
        prog="faceattr",
        description="Heterogeneous face attribute estimation (age, gender, race) with one deep multi-task network.",
    )
    ap.add_argument("--debug", action="store_true", help="show full stack traces")
    ap.add_argument("--quiet", "-q", action="store_true", help="no progress bars")
    ap.add_argument("--log-level", default="INFO")
    sub = ap.add_subparsers(dest="command", required=True)
    for name in COMMANDS:
        _command(name, 1)(sub)
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
