"""``python -m evaluation.promote``: register the best evaluated model in the MLflow model registry.

Among finished ``evaluation.evaluate`` runs of trained models (tag ``showroom.model_run``) on the
same catalog and scene list, the one with the highest ``--metric`` wins; its training run's
serving folder (``index/``: model.keras + indexes, or ``model/``) becomes a new version of
``--name`` and ``--alias`` points at it. ``models:/showroom@champion`` then works wherever a model
is accepted (``--model`` of every CLI, ``SHOWROOM_INDEX`` of the app).
"""

from __future__ import annotations

import argparse
import logging
import math
from collections.abc import Sequence

from engine.runtime import run_cli
from training.tracking import find_runs, register_model, run_record

logger = logging.getLogger("evaluation.promote")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m evaluation.promote",
        description="Register the best evaluated model (or --eval-run's) as NAME with ALIAS in the MLflow registry.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("--metric", default="s2p_recall_at_10", help="evaluation metric to maximise")
    p.add_argument("--eval-run", default=None, help="promote the model of this evaluation run instead of choosing")
    p.add_argument("--catalog-fingerprint", default=None, help="compare only evaluations of this catalog (default: that of the most recent evaluation)")
    p.add_argument("--name", default="showroom", help="registered model name")
    p.add_argument("--alias", default="champion", help="alias to point at the new version")
    p.add_argument("--experiment", default="showroom", help="MLflow experiment")
    p.add_argument("--dry-run", action="store_true", help="only print the ranking")
    p.add_argument("--verbose", action="store_true", help="debug logging")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return run_cli(lambda home: _run(args), verbose=args.verbose, logger_name=logger.name)


def choose(runs: list[dict], metric: str, catalog_fingerprint: str | None = None) -> tuple[dict, list[dict]]:
    """(winner, ranking) among evaluation runs of trained models on one catalog and scene list.

    The catalog and scene list are those of ``catalog_fingerprint`` (default: the newest run's);
    ties go to the newer run.
    """
    trained = [r for r in runs if r["tags"].get("showroom.model_run")]
    if not trained:
        raise ValueError("no evaluation runs of trained models: run python -m evaluation.evaluate --model RUN_ID first")
    newest = max(trained, key=lambda r: r["start"])
    fp = catalog_fingerprint or newest["params"].get("catalog_fingerprint")
    scenes = newest["params"].get("scenes_sha", "") if catalog_fingerprint is None else None
    same = [r for r in trained if r["params"].get("catalog_fingerprint") == fp and (scenes is None or r["params"].get("scenes_sha", "") == scenes)]
    scored = [r for r in same if metric in r["metrics"] and not math.isnan(r["metrics"][metric])]
    if not scored:
        raise ValueError(f"no evaluation run on catalog {fp} has metric {metric!r}")
    ranking = sorted(scored, key=lambda r: (r["metrics"][metric], r["start"]), reverse=True)
    return ranking[0], ranking


def _run(args: argparse.Namespace) -> int:
    if args.eval_run:
        winner = run_record(args.eval_run)
        if winner["tags"].get("showroom.kind") != "evaluate" or not winner["tags"].get("showroom.model_run"):
            raise ValueError(f"run {args.eval_run} is not an evaluation of a trained model (tags showroom.kind=evaluate, showroom.model_run)")
        ranking = [winner]
    else:
        winner, ranking = choose(find_runs("evaluate", args.experiment), args.metric, args.catalog_fingerprint)
    for r in ranking:
        value = r["metrics"].get(args.metric)
        print(f"{'*' if r is winner else ' '} eval {r['run_id']}  model run {r['tags']['showroom.model_run']}  "
              f"{args.metric}={'-' if value is None else f'{value:.4f}'}")
    if args.dry_run:
        return 0
    model_run = winner["tags"]["showroom.model_run"]
    version = register_model(model_run, args.name, args.alias, {"eval_run": winner["run_id"], "metric": args.metric,
                                                                "value": str(winner["metrics"].get(args.metric, ""))})
    print(f"models:/{args.name}@{args.alias} -> version {version} (training run {model_run})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
