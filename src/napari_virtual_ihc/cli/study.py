"""`virtual-ihc study build|import|analyze|status`: blinded reader studies (argument parsing only)."""

from __future__ import annotations

import argparse
import datetime as dt
import math
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from ..slides.tiff_backend import PLAUSIBLE_MPP
from .argtypes import NUCLEI_CHOICES, float_in, int_in

if TYPE_CHECKING:
    from napari_virtual_ihc.study.analysis import Estimate


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("study", help="blinded reader studies: build a bundle, import answers, analyse")
    ssub = p.add_subparsers(dest="study_command", required=True, metavar="ACTION")

    b = ssub.add_parser("build", help="build a reader bundle + unblinding key from a table of cases")
    b.add_argument("cases", type=Path, help="CSV/TSV: case_id, real, virtual[_name]..., [he], [x, y, w, h]")
    b.add_argument("--out", type=Path, required=True, help="new bundle folder (given to readers)")
    b.add_argument("--key", type=Path, help="unblinding key path (default: <out>_key.json beside the bundle)")
    who = b.add_mutually_exclusive_group(required=True)
    who.add_argument("--readers", nargs="+", metavar="ID", help="reader IDs")
    who.add_argument("--n-readers", type=int_in(1, 1000), metavar="N", help="readers reader-1..reader-N")
    b.add_argument("--seed", type=int, default=0, help="seed of every reader's order (default 0)")
    b.add_argument(
        "--min-gap", type=int_in(0, 100_000), default=10, help="versions of a case at least N positions apart"
    )
    b.add_argument("--sessions", action="store_true", help="one version per case per session instead")
    b.add_argument(
        "--washout-days",
        type=int_in(0, 3650),
        help="with --sessions: days between finishing one session and the next",
    )
    b.add_argument(
        "--session2-opens",
        type=dt.date.fromisoformat,
        metavar="YYYY-MM-DD",
        help="with --sessions: later sessions do not open before this date",
    )
    b.add_argument(
        "--size", type=int_in(16, 200_000), nargs=2, metavar=("W", "H"), help="resample every image to W x H"
    )
    b.add_argument("--ultralow", action="store_true", help="offer the HER2-ultralow category")
    b.add_argument(
        "--whole-slide",
        action="store_true",
        help="every case as a tiled pyramid read lazily (cases over 8192^2 px without a region always are)",
    )
    b.add_argument("--title", default="HER2 reader study")
    b.set_defaults(func=run_build)

    i = ssub.add_parser("import", help="import answers scored elsewhere (glass, other tools) from a CSV")
    i.add_argument(
        "csv",
        type=Path,
        help="reader_id, score, image_id | case_id + modality, [confidence, comment, seconds]",
    )
    i.add_argument("--answers-dir", type=Path, required=True, help="folder of per-reader answer stores")
    i.add_argument("--key", type=Path, help="study key (checks image IDs, ties the stores to the study)")
    i.set_defaults(func=run_import)

    a = ssub.add_parser("analyze", help="statistics + HTML report from the key and the answer stores")
    a.add_argument("--key", type=Path, help="unblinding key (needed unless every answer names its case)")
    a.add_argument("--answers", type=Path, nargs="+", required=True, help="answer stores or folders of them")
    a.add_argument("--out", type=Path, required=True, help="report folder")
    a.add_argument(
        "--bootstrap",
        type=int_in(0, 1_000_000),
        default=2000,
        help="bootstrap resamples for kappa CIs (0: none)",
    )
    a.add_argument("--seed", type=int, default=0, help="bootstrap seed")
    a.add_argument("--ultralow", action="store_true", help="use 5 categories even if nobody chose ultralow")
    a.add_argument(
        "--reference",
        type=Path,
        help="CSV case_id, reference (HER2 score or positive/negative); default: the key's reference column",
    )
    a.add_argument(
        "--positive-from",
        default="3+",
        metavar="SCORE",
        help="HER2 score from which a case counts as positive (iMRMC truth rows, binary reference; default 3+)",
    )
    a.add_argument(
        "--include-algorithm",
        action="store_true",
        help="include the reader 'algorithm' (see `study algorithm`) in the statistics and imrmc.csv",
    )
    a.set_defaults(func=run_analyze)

    g = ssub.add_parser(
        "algorithm", help="score every study image with the overlays' HER2 estimate, as reader 'algorithm'"
    )
    g.add_argument("--key", type=Path, required=True, help="unblinding key (it names every image's source)")
    g.add_argument(
        "--out",
        "--answers-dir",
        dest="out",
        type=Path,
        help="the coordinator's folder for algorithm.sqlite (default: algorithm/ beside the key; never inside "
        "the readers' bundle)",
    )
    g.add_argument(
        "--nuclei",
        default="auto",
        choices=NUCLEI_CHOICES,
        help="nuclei method (default auto)",
    )
    g.add_argument(
        "--mpp",
        type=float_in(*PLAUSIBLE_MPP, unit="µm/px"),
        help="µm/px when the images carry none (default: assumed 0.5)",
    )
    g.add_argument(
        "--marker",
        default="her2",
        choices=("her2", "ki67", "er", "pr"),
        help="marker profile (the study's 0/1+/2+/3+ scale is HER2's: other markers are refused)",
    )
    g.set_defaults(func=run_algorithm)

    s = ssub.add_parser("status", help="per-reader progress (answered k of n) without unblinding")
    s.add_argument("bundle", type=Path)
    s.add_argument("--answers-dir", type=Path, help="default: <bundle>/answers")
    s.set_defaults(func=run_status)


def _fail(exc: Exception) -> int:
    print(f"virtual-ihc study: {exc}", file=sys.stderr)
    return 2


def run_build(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from napari_virtual_ihc.study import BuildOptions, StudyError, build_study

    readers = (
        tuple(args.readers) if args.readers else tuple(f"reader-{k}" for k in range(1, args.n_readers + 1))
    )
    opts = BuildOptions(
        readers=readers,
        seed=args.seed,
        min_gap=args.min_gap,
        sessions=args.sessions,
        washout_days=args.washout_days,
        second_session_opens=args.session2_opens,
        size=tuple(args.size) if args.size else None,
        ultralow=args.ultralow,
        title=args.title,
        whole_slide=args.whole_slide,
    )
    bars: list[tqdm] = []  # made at the first image, so a refused build prints only its message

    def progress(done: int, total: int) -> None:
        if not bars:
            bars.append(tqdm(desc="encoding images", unit="img", total=total))
        bars[0].update(done - bars[0].n)

    try:
        bundle, key = build_study(args.cases, args.out, opts, key_path=args.key, progress=progress)
    except (StudyError, ValueError) as exc:
        return _fail(exc)
    finally:
        for bar in bars:
            bar.close()
    print(f"bundle: {bundle}  (give this folder to the readers: {', '.join(readers)})")
    print(f"key:    {key}  (coordinator only; keep it away from readers)")
    return 0


def run_import(args: argparse.Namespace) -> int:
    from napari_virtual_ihc.study import StudyError, load_key
    from napari_virtual_ihc.study.importer import import_answers_csv

    try:
        key = load_key(args.key) if args.key else None
        n = import_answers_csv(args.csv, args.answers_dir, key)
    except StudyError as exc:
        return _fail(exc)
    print(f"imported {n} answers into {args.answers_dir}")
    return 0


def run_analyze(args: argparse.Namespace) -> int:
    from napari_virtual_ihc.study import StudyError, load_key
    from napari_virtual_ihc.study.coordinator import analyze_answers
    from napari_virtual_ihc.study.ratings import collect_ratings
    from napari_virtual_ihc.study.reference import read_reference_csv, reference_from_key
    from napari_virtual_ihc.study.report import prepare_report_dir, write_report

    try:
        prepare_report_dir(args.out)  # a read-only or file --out fails before any work
        key = load_key(args.key) if args.key else None
        if args.reference:
            reference = read_reference_csv(args.reference, args.positive_from)
        else:
            reference = reference_from_key(key, args.positive_from)
        ratings = collect_ratings(key, args.answers, include_algorithm=args.include_algorithm)
        if ratings.empty:
            raise StudyError("no answers to analyse")
        results = analyze_answers(
            ratings,
            key,
            reference=reference,
            n_boot=args.bootstrap,
            ultralow=True if args.ultralow else None,
            seed=args.seed,
        )
        report = write_report(results, args.out)
    except StudyError as exc:
        return _fail(exc)
    for c in results.comparisons:
        acc = c.accuracy
        if acc.n == 0:
            print(f"{c.reader_id} {c.modality}: no case with both versions scored")
            continue
        print(
            f"{c.reader_id} {c.modality}: accuracy {acc.k}/{acc.n} = {100 * acc.estimate:.1f} % "
            f"(Wilson 95 % CI {100 * acc.low:.1f}-{100 * acc.high:.1f}), "
            f"kappa linear {_kappa(c.kappa_linear)}, quadratic {_kappa(c.kappa_quadratic)}"
        )
    against = [(c.reader_id, c.modality, c.accuracy) for c in results.vs_reference]
    against += [(b.reader_id, b.modality, b.accuracy) for b in results.vs_truth]
    for reader, modality, acc in against:
        if acc.n:
            print(f"{reader} {modality} vs reference: {acc.k}/{acc.n} = {100 * acc.estimate:.1f} %")
    print(f"report: {report}")
    return 0


def _kappa(e: Estimate) -> str:
    return f"{e.value:.3f}" if math.isfinite(e.value) else (e.note or "undefined")


def run_algorithm(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from napari_virtual_ihc.study import StudyError, load_key
    from napari_virtual_ihc.study.algorithm import default_algorithm_dir, score_study_images

    bar = tqdm(desc="HER2 estimate", unit="img")

    def progress(done: int, total: int) -> None:
        bar.total = total
        bar.update(done - bar.n)

    out = args.out or default_algorithm_dir(args.key)
    try:
        n = score_study_images(
            load_key(args.key), out, nuclei=args.nuclei, mpp=args.mpp, progress=progress, marker=args.marker
        )
    except StudyError as exc:
        return _fail(exc)
    finally:
        bar.close()
    print(f"algorithm: {n} images scored into {out} (reader 'algorithm')")
    return 0


def run_status(args: argparse.Namespace) -> int:
    """Every reader's progress; one unreadable store is reported on its line and the others go on."""
    from napari_virtual_ihc.study import AnswerStore, StudyError, load_bundle
    from napari_virtual_ihc.study.session import store_filename

    try:
        bundle = load_bundle(args.bundle, verify_hashes=False)
    except StudyError as exc:
        return _fail(exc)
    folder = args.answers_dir or bundle.root / "answers"
    if folder.exists() and not folder.is_dir():
        return _fail(StudyError(f"--answers-dir {folder} is a file, not a folder of answer stores"))
    failed = 0
    for reader, plans in bundle.readers.items():
        path = folder / store_filename(reader)
        total = sum(len(p.items) for p in plans)
        try:
            answered = 0
            if path.exists():
                with AnswerStore.open_existing(path) as store:
                    if (store.study_id, store.reader_id) != (bundle.study_id, reader):
                        raise StudyError(f"{path.name} belongs to another study or reader")
                    answered = len(store.current_answers())
        except StudyError as exc:
            failed += 1
            print(f"{reader}: answer store unreadable: {exc}")
            continue
        print(f"{reader}: {answered} of {total} answered")
    if failed:
        print(f"virtual-ihc study: {failed} answer store(s) could not be read", file=sys.stderr)
        return 1
    return 0
