"""``faceattr batch``: many photos to sharded, resumable Parquet, locally or on Ray."""

from __future__ import annotations

import argparse
import json
import logging

from faceattr.cli.predict import detector_option
from faceattr.runtime.policy import RUNTIMES

log = logging.getLogger("faceattr")


def _add_batch(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("batch", help="attributes of every face in many photos, as sharded, resumable Parquet files")
    p.add_argument("inputs", nargs="+", help="folders, globs, .txt lists, or .csv/.parquet tables with a path column")
    p.add_argument("--out", required=True, help="folder for part-K-of-N.parquet and _batch.json")
    p.add_argument("--model", help="checkpoint or .onnx file (default: the shipped model on --runtime)")
    p.add_argument(
        "--runtime",
        choices=RUNTIMES,
        default="auto",
        help="for the shipped model (default: auto, as faceattr predict: INT8, or float32 on a CPU without VNNI)",
    )
    p.add_argument("--shard-size", type=int, help="photos per output file (local engine; default 1000)")
    p.add_argument("--shard", default="0/1", help="I/M: run only the shards k with k %% M == I (machine I of M)")
    p.add_argument("--workers", type=int, help="decoding/detection processes (default: the CPU count)")
    p.add_argument("--batch-size", type=int, default=64, help="faces per network batch")
    p.add_argument("--threads", type=int, help="threads of the network")
    p.add_argument("--no-detect", action="store_true", help="inputs are already face crops")
    p.add_argument("--detector", default="auto")
    p.add_argument("--yunet-model")
    p.add_argument("--min-score", type=float)
    p.add_argument("--max-pixels", type=int, default=64_000_000)
    p.add_argument("--path-column", default="path", help="the path column of a .csv/.parquet input")
    p.add_argument(
        "--engine",
        choices=["local", "ray"],
        default="local",
        help="local: sharded, resumable, one machine; ray: Ray Data on a local Ray or --ray-address",
    )
    p.add_argument("--ray-address", help="a running Ray cluster: auto, or ray://HEAD:10001 (default: a local Ray)")
    p.add_argument("--actors", type=int, default=2, help="ray: model replicas (one per actor, loaded once)")


def _run_batch(a: argparse.Namespace) -> int:
    from faceattr.batch.engine import run_batch
    from faceattr.errors import UsageError

    try:
        i, m = (int(x) for x in a.shard.split("/"))
    except ValueError:
        raise UsageError(f"--shard must be I/M (e.g. 0/4), got {a.shard!r}") from None
    if a.engine == "ray":
        from faceattr.batch.ray_engine import run_batch_ray

        local_only = [
            opt
            for opt, given in (
                ("--shard", a.shard != "0/1"),
                ("--shard-size", a.shard_size is not None),
                ("--workers", a.workers is not None),
            )
            if given
        ]
        if local_only:
            raise UsageError(
                f"{', '.join(local_only)} apply to the local engine; the Ray engine splits the work over its actors "
                "itself (--actors)"
            )

        print(
            json.dumps(
                run_batch_ray(
                    a.inputs,
                    a.out,
                    a.model,
                    actors=a.actors,
                    batch_photos=16,
                    detect=not a.no_detect,
                    detector=detector_option(a),
                    max_pixels=a.max_pixels,
                    runtime=a.runtime,
                    path_column=a.path_column,
                    address=a.ray_address,
                )
            )
        )
        return 0
    res = run_batch(
        a.inputs,
        a.out,
        a.model,
        shard_size=1000 if a.shard_size is None else a.shard_size,
        shards=(i, m),
        workers=a.workers,
        detect=not a.no_detect,
        detector=detector_option(a),
        max_pixels=a.max_pixels,
        batch_size=a.batch_size,
        runtime=a.runtime,
        threads=a.threads,
        path_column=a.path_column,
        progress=not a.quiet,
    )
    print(json.dumps({k: v for k, v in res.items() if k != "written"} | {"written": len(res["written"])}))
    return 0
