"""``cegppo report RUN [RUN ...] --out report.html``: one self-contained HTML page comparing training runs.

Reads each run directory's ``metrics.jsonl`` (and ``config.json`` for the label), and writes a summary table,
the reward / accuracy / entropy / length / clip-fraction curves, clipped tokens, gradient weight and entropy
push by token group, and the entropy predictor check. Evaluation results of ``cegppo eval`` (``eval.json``,
found in ``RUN/eval.json`` or ``RUN/eval/eval.json``, or passed with ``--eval``) go in a table next to the
authors' reported numbers (the paper in brief, §5), each row labelled with its source. plotly.js is embedded once (offline) unless
``--plotlyjs cdn``.
"""

from __future__ import annotations

import html
import json
import os
from typing import Sequence

import plotly.io as pio

from ..gpu import evaluate
from . import run_figures
from .tables import Table
from ..lm import checkpoint as ckpt
from ..lm.run_dir import CONFIG_FILE, read_metrics


def _read_json(path: str) -> dict | None:
    if not os.path.exists(path):
        return None
    with open(path) as f:
        return json.load(f)


def trained_config(run_dir: str) -> tuple[dict | None, bool]:
    """``(config, edited)``: the config the run trained with, from its newest checkpoint's ``run_config.json``
    (written by the trainer, verified on resume), else the folder's ``config.json``; ``edited`` when the folder's
    ``config.json`` says otherwise (someone changed it after the run wrote it)."""
    shown = _read_json(os.path.join(run_dir, CONFIG_FILE))
    latest = ckpt.latest_checkpoint(run_dir)
    saved = _read_json(os.path.join(latest, ckpt.RUN_CONFIG_FILE)) if latest else None
    if saved is None:
        return shown, False
    return saved, shown is not None and shown != saved


def run_label(run_dir: str) -> str:
    """``method`` plus the β values when the run's config has them, else the directory name; marked when the
    folder's ``config.json`` was edited after the run (the label is the trained config's)."""
    config, edited = trained_config(run_dir)
    if config is None:
        return os.path.basename(os.path.normpath(run_dir))
    label = config.get("method", os.path.basename(os.path.normpath(run_dir)))
    betas = [f"{k}={config[k]}" for k in ("beta1", "beta2") if config.get(k) is not None]
    label = f"{label} ({', '.join(betas)})" if betas else label
    return label + " [config.json edited after the run]" if edited else label


def run_labels(run_dirs: Sequence[str], labels: Sequence[str] | None = None) -> list[str]:
    """One distinct label per run: the given ones, else ``run_label``; two runs of one method both keep theirs
    (the second gets a prime), and a run's curves and its evaluation row carry the same label."""
    if labels and len(labels) != len(run_dirs):
        raise ValueError(f"got {len(labels)} labels for {len(run_dirs)} runs; give one per run or none")
    distinct: list[str] = []
    for i, run_dir in enumerate(run_dirs):
        label = labels[i] if labels else run_label(run_dir)
        while label in distinct:
            label += "'"
        distinct.append(label)
    return distinct


def load_runs(run_dirs: Sequence[str], labels: Sequence[str] | None = None) -> dict[str, list[dict]]:
    runs = {}
    for label, run_dir in zip(run_labels(run_dirs, labels), run_dirs):
        if not os.path.exists(os.path.join(run_dir, "metrics.jsonl")):
            raise ValueError(f"run directory {run_dir!r} has no metrics.jsonl")
        runs[label] = read_metrics(run_dir)
    return runs


def _table(rows: list[dict], digits: int = 3) -> str:
    return Table.from_dicts(rows, digits)._repr_html_() if rows else ""


def load_evals(run_dirs: Sequence[str], labels: Sequence[str] | None, eval_paths: Sequence[str] = ()) -> dict:
    """label -> eval.json dict: those found in the run directories (labelled like the runs), then ``eval_paths``
    (files or folders, labelled by their model)."""
    evals = {}
    for label, run_dir in zip(run_labels(run_dirs, labels), run_dirs):
        path = evaluate.find_eval(run_dir)
        if path:
            evals[label] = evaluate.read_eval(path)
    for path in eval_paths:
        result = evaluate.read_eval(path)
        label = result["model"]
        while label in evals:
            label += "'"
        evals[label] = result
    return evals


def eval_section(evals: dict[str, dict]) -> str:
    """The evaluation table: the authors' reported numbers, then ours, each row naming its source."""
    rows = evaluate.eval_table_rows(evals)
    return ("<h2>Evaluation (avg@k, %)</h2><p>Rows marked <em>reported by the authors</em> are copied from the "
            "paper's README (the paper in brief, §5); rows marked <em>ours</em> come from <code>cegppo eval</code> and say "
            "what produced them.</p>" + _table(rows, digits=1))


def build_report(runs: dict[str, list[dict]], title: str = "cegppo runs", plotlyjs: str = "inline",
                 evals: dict[str, dict] | None = None) -> str:
    figures = [run_figures.run_curves_figure(runs, smooth=1), run_figures.clipped_by_group_figure(runs),
               run_figures.group_weight_figure(runs), run_figures.group_push_figure(runs),
               run_figures.entropy_prediction_figure(runs)] if runs else []
    include = True if plotlyjs == "inline" else "cdn"
    parts = []
    for i, fig in enumerate(figures):
        parts.append(pio.to_html(fig, include_plotlyjs=include if i == 0 else False, full_html=False,
                                 div_id=f"report-fig-{i}", config={"displaylogo": False}))
    style = ("body{font-family:sans-serif;max-width:1100px;margin:auto}table{border-collapse:collapse}"
             "td,th{border:1px solid #ccc;padding:4px 8px;text-align:right}")
    return (f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
            f"<style>{style}</style></head><body><h1>{html.escape(title)}</h1>"
            f"{_table(run_figures.summary_rows(runs)) if runs else ''}{eval_section(evals) if evals else ''}"
            f"{''.join(parts)}</body></html>")


def add_cli(subparsers):
    parser = subparsers.add_parser("report", help="compare training runs in one HTML page",
                                   description="Compare runs written by `cegppo train`: reward, held-out accuracy, "
                                               "entropy, clip fractions and token-group contributions.")
    parser.add_argument("runs", nargs="*", help="run directories (each with metrics.jsonl; an eval.json in RUN/ or "
                                                "RUN/eval/ is shown in the evaluation table)")
    parser.add_argument("--eval", dest="evals", nargs="*", default=[], metavar="EVAL",
                        help="more eval.json files (or folders holding one) from `cegppo eval`")
    parser.add_argument("--out", required=True, help="HTML file to write")
    parser.add_argument("--labels", nargs="*", help="one label per run (default: method and β from config.json)")
    parser.add_argument("--title", default="cegppo runs")
    parser.add_argument("--plotlyjs", choices=("inline", "cdn"), default="inline",
                        help="embed plotly.js (offline, ~4 MB) or load it from the CDN")
    parser.set_defaults(func=run_cli)
    return parser


def run_cli(args) -> int:
    if not args.runs and not args.evals:
        raise ValueError("runs=[] and --eval=[]: give at least one run directory or eval.json")
    runs = load_runs(args.runs, args.labels)
    evals = load_evals(args.runs, args.labels, args.evals)
    page = build_report(runs, args.title, args.plotlyjs, evals)
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    with open(args.out, "w", encoding="utf-8") as f:
        f.write(page)
    print(f"wrote {args.out} ({len(runs)} runs, {len(evals)} evaluations)")
    return 0
