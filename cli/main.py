"""Command line: ``python run_pipeline.py VERB ...``.

``run`` is implemented here; every other verb is a ``module:function`` taking the remaining arguments
(``cli/<verb>.py``, or the synthetic-data package's own command line), imported only when used.
``--debug`` anywhere on the line shows tracebacks of user errors (which are otherwise one line).
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import pickle
import sys
import traceback

from cli.parsing import ArgumentParser
from pipeline.errors import UserError, one_line, unpickling_reason

log = logging.getLogger("gaitscope")

# Exit status of every verb (documented in the README).
EXIT_OK = 0  # every source completed (or was complete already, with --resume)
EXIT_SOURCE_FAILED = 1  # the run went through, but at least one source failed or did not finish
EXIT_USER_ERROR = 2  # nothing was processed: bad arguments, config, weights, gallery or output folder
EXIT_OUTPUT_FAILED = 3  # outputs could not be written (disk full, ...): incomplete sources stay .partial
EXIT_INTERRUPTED = 130  # Ctrl-C: incomplete sources stay .partial for --resume

# verb -> (module:function taking argv, one-line help)
DELEGATED_VERBS: dict[str, tuple[str, str]] = {
    "demo": ("cli.demo:main", "render a synthetic scene, run the pipeline on it, compare with its ground truth"),
    "enroll": ("cli.gallery:enroll_main", "add an identity to the gallery from a clip or a previous run's track"),
    "gallery": ("cli.gallery:gallery_main", "list, remove or export gallery identities"),
    "search": ("cli.gallery:search_main", "rank gallery identities for the people in a clip"),
    "query": ("cli.query:main", "filter exported track records by attributes"),
    "report": ("cli.report:main", "write OUT/report.html (identities, sightings, sources) for a run's output folder"),
    "synth": ("synth.cli:main", "render synthetic walkers: videos, ground truth, datasets"),
    "train": ("cli.learned:train_main", "train a learned stage: train STAGE --config configs/train/... (train list)"),
    "eval": ("cli.learned:eval_main", "evaluate a learned stage on its benchmark protocol (eval list)"),
    "bench": ("cli.bench:main", "run a benchmark (prints ratios against an in-process baseline)"),
}


def _run_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("run", help="run the pipeline over videos, folders or rtsp:// streams")
    p.add_argument("sources", nargs="+", help="video files, folders of archives (recursive), rtsp:// URLs")
    p.add_argument("--out", default="out", help="output folder (default: out)")
    p.add_argument("--config", default=None, help="config file or name in configs/ (default: default)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="SECTION.KEY=VALUE",
                   help="override a config value (repeatable), e.g. --set detect.backend=classic")
    p.add_argument("--video-out", default=None, metavar="DIR", help="write an annotated MP4 per source here")
    p.add_argument("--save-silhouettes", action="store_true", help="save silhouette PNG strips under OUT/silhouettes")
    p.add_argument("--save-embeddings", action="store_true", help="include embeddings in the records (for enrolment)")
    p.add_argument("--resume", action="store_true", help="skip sources completed by an earlier run into OUT")
    p.add_argument("--max-frames", type=int, default=None, help="stop each source after this many frames")
    p.add_argument("--stride", type=int, default=None, help="use every Nth frame")
    p.add_argument("--reconnect-forever", action="store_true",
                   help="live streams retry for ever (operators); by default a stream that stays down gives up "
                        "after source.max_reconnect_attempts retries so a batch ends")
    p.add_argument("--allow-download", action="store_true", help="let backends download missing published weights")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--report", action="store_true", help="write OUT/report.html (self-contained) at the end")
    p.add_argument("--executor", choices=("local", "ray"), default="local",
                   help="local: this process; ray: spread the sources over Ray workers (pip install 'gaitscope[ray]')")
    p.add_argument("--ray-address", default=None, metavar="ADDR",
                   help="Ray cluster to use (e.g. auto or ray://head:10001); default: start Ray on this machine")
    p.add_argument("--ray-workers", type=int, default=None, metavar="N",
                   help="Ray worker actors (default: one per CPU)")


def run_main(args: argparse.Namespace) -> int:
    from pipeline import app

    overrides = list(args.overrides)
    if args.max_frames is not None:
        overrides.append(f"source.max_frames={args.max_frames}")
    if args.stride is not None:
        overrides.append(f"source.frame_stride={args.stride}")
    if args.save_embeddings:
        overrides.append("export.save_embeddings=true")
    if args.no_progress:
        overrides.append("runner.progress=false")
    if args.reconnect_forever:
        overrides.append("source.max_reconnect_attempts=null")
    if not args.allow_download:
        os.environ.setdefault("YOLO_OFFLINE", "1")
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
    executor = None
    if args.executor == "ray":
        from pipeline.ray_executor import RayExecutor, import_ray

        import_ray()  # before any work: a missing Ray is one line, not a traceback
        executor = RayExecutor(address=args.ray_address, workers=args.ray_workers)
    elif args.ray_address is not None or args.ray_workers is not None:
        raise UserError("--ray-address and --ray-workers need --executor ray")
    config = app.load(args.config, overrides)
    outputs = app.run(
        args.sources,
        args.out,
        config,
        video_out=args.video_out,
        save_silhouettes=args.save_silhouettes,
        resume=args.resume,
        report=args.report,
        executor=executor,
    )
    summary = outputs.summary
    unfinished = [s for s in summary["sources"] if s["status"] not in ("done", "skipped (complete)")]
    print(
        f"{len(summary['sources'])} source(s), {summary['frames_total']} frames, {summary['windows']} track windows"
        f" in {summary['seconds']:.1f} s ({summary['fps']} fps); summary: {outputs.summary_path or 'not written'}"
    )
    for stage in summary["stages"]:
        print(f"  {stage['stage']:>14}: {stage['items_in']:>7} in  {stage['ms_per_item']:>9.2f} ms/item  {stage['errors']} errors")
    for source in unfinished:
        if source["errors"]:
            print(one_line(f"error: {source['source']}: {source['errors'][-1]}"), file=sys.stderr)
    strips = summary.get("silhouettes")
    if outputs.output_error:
        print(f"error: {outputs.output_error}; {len(unfinished)} source(s) left .partial: free space and rerun "
              "with --resume", file=sys.stderr)
        return EXIT_OUTPUT_FAILED
    if strips and strips["failed"]:
        print(one_line(f"error: {strips['failed']} of {strips['failed'] + strips['written']} silhouette strips not "
                       f"written ({strips['first_error']})"), file=sys.stderr)
        return EXIT_OUTPUT_FAILED
    if summary["interrupted"]:
        print("interrupted: incomplete sources stay .partial; rerun with --resume to finish them", file=sys.stderr)
        return EXIT_INTERRUPTED
    return EXIT_SOURCE_FAILED if unfinished else EXIT_OK


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in argv or os.environ.get("GAITSCOPE_DEBUG") == "1"
    argv = [a for a in argv if a != "--debug"]
    # Our own loggers speak at INFO; libraries (faiss, ultralytics, paddle) only at WARNING.
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    for name in ("gaitscope", "pipeline", "stages", "synth", "training", "evaluation"):
        logging.getLogger(name).setLevel(logging.INFO)
    parser = ArgumentParser(
        prog="run_pipeline.py",
        description="gaitscope: gait-first person identification for surveillance video",
    )
    sub = parser.add_subparsers(dest="verb", required=True, metavar="VERB")
    _run_parser(sub)
    for verb, (_, help_text) in DELEGATED_VERBS.items():
        sub.add_parser(verb, help=help_text, add_help=False)
    if argv and argv[0] in DELEGATED_VERBS:
        target, _ = DELEGATED_VERBS[argv[0]]
        module_name, _, function = target.partition(":")
        try:
            entry = getattr(importlib.import_module(module_name), function)
        except (ImportError, AttributeError) as exc:
            print(f"error: the '{argv[0]}' command is unavailable: {exc}", file=sys.stderr)
            return 2
        return _guarded(lambda: entry(argv[1:]), debug)
    args = parser.parse_args(argv)
    return _guarded(lambda: run_main(args), debug)


def _guarded(call, debug: bool = False) -> int:
    """Run a command; user-fixable problems become one line on stderr and EXIT_USER_ERROR
    (with ``--debug`` the traceback too). Anything else is a bug and keeps Python's traceback."""
    try:
        return int(call() or 0)
    except (UserError, FileNotFoundError) as exc:
        if debug:
            traceback.print_exc()
        message = exc if isinstance(exc, UserError) else one_line(
            f"{exc.strerror}: {exc.filename}" if exc.strerror and exc.filename else str(exc))
        print(f"error: {message}", file=sys.stderr)
        return EXIT_USER_ERROR
    except pickle.UnpicklingError as exc:  # a weights file refused by torch's weights-only loader
        if debug:
            traceback.print_exc()
        print(f"error: weights refused: {unpickling_reason(exc)}", file=sys.stderr)
        return EXIT_USER_ERROR
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED


if __name__ == "__main__":
    sys.exit(main())
