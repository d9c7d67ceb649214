r"""A run directory as one self-contained report: HTML (offline), strict JSON or Markdown.

:func:`build_report` reads a run directory (and any runs to compare with it) and gathers, in
order, the sections below; :func:`render` turns the same :class:`Report` into text and
:func:`write_report` writes it atomically. Each section has a stable ``id``.

``summary``
    Scenario, the rule in words, liquidated / eligible / excluded users (and why), budget, paid
    and unspent (cents, from the manifest), the smallest and largest voucher allowed, users at
    the floor, interior and at the cap, the budget's shadow price, the solver and whether the
    certificate (before and after rounding to cents) holds.
``rounds`` (a run of round 2 or later only)
    Every round of the distribution's chain (what users hold after it, what it paid out, its
    appeals and what became of earlier vouchers) and every appeal with the user's history in
    words (:mod:`allocator.report.rounds_section`). The sweeps and the axioms solve a scenario
    from scratch, which a later round is not: for such a run they are skipped, with the reason.
``reconciliation``
    Every finance check of :func:`allocator.analysis.checks.check_run_dir`, PASS or FAIL, for
    the reported run; one line per compared run (all checks passed, or the failures).
``voucher-histogram``
    The reported run's vouchers in equal steps of a round amount from USD 0 (USD 250 up to a
    USD 6,000 cap), split into users at the floor, interior and at the cap.
``voucher-vs-loss``
    For every run, one chart: users grouped by loss in 1-2-5 steps (the same groups for every
    run), the median voucher of each group and its 10th to 90th percentile, on a logarithmic
    loss axis labelled in dollars at each power of ten.
``lorenz``
    Lorenz curves :math:`L(k/n)` of every run (:func:`allocator.analysis.metrics.lorenz`) with
    their Gini.
``coverage``
    Coverage ``voucher / loss`` by loss band (users, p10, median, p90) for every run.
``sweep``
    The run's scenario re-solved on the run's own input data along ``objective.alpha``
    (:func:`allocator.analysis.sweeps.run_sweep`): Gini, median coverage and users at the cap at
    each point.
``shadow-price``
    The same scenario along the budget, from 0.5x to 1.5x the run's budget (rounded to the cent):
    users paid at the floor and at their cap, median coverage, and the shadow price
    :math:`\lambda(B)` of the budget constraint :math:`\sum_i v_i \le B` over the run's own.
    Points the model cannot meet are listed with the reason.
``cliff``
    Users excluded just below the loss and ratio thresholds and the median voucher just above
    them (:func:`allocator.analysis.sensitivity.cliff_analysis`), thresholds from the run's
    scenario: a chart of the users either side of each threshold and a two-row summary.
``fairness``
    :func:`allocator.analysis.audit.audit`: Gini, top-decile share, monotonicity and envy pair
    counts, what explains them and what remains unexplained.
``axioms``
    :func:`allocator.analysis.axioms_run.run_axioms` of every run, side by side (rules compared
    axiom by axiom), and what theory expects of the main run's rule; ``axioms_sample`` 0 skips
    it.

Every run directory is read with :func:`allocator.runs.reader.load_run` (``inputs=True``): a
damaged run directory, one changed since its run, or input files that changed or are gone are
refused with an :class:`~allocator.errors.InputError` and nothing is written. A run that passes
those checks but fails a finance check (a hand-edited manifest, a bug) is reported with the
failures marked, and ``report.ok`` is False. The sweeps have at most
:data:`~allocator.report.model.MAX_SWEEP_POINTS` points each.

Titles, headings and chart axes are in words and dollars for policy designers and the public
(:mod:`allocator.report.words`); the JSON format keeps the machine names in each section's
``data``.

Determinism: charts are PNG images drawn with Matplotlib's Agg renderer without a ``Software``
or date entry, numbers are formatted with fixed precision and nothing depends on the clock, so
the same run directory gives a byte-identical report. The HTML needs no network: CSS is inline
and every chart is a ``data:image/png;base64`` URI.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from allocator.errors import InputError
from allocator.report.html import render_html
from allocator.report.inputs import load_report_run, open_session
from allocator.report.jsonout import render_json
from allocator.report.markdown import render_md
from allocator.report.model import (
    DEFAULT_AXIOMS_SAMPLE,
    DEFAULT_SWEEP_POINTS,
    FORMATS,
    MAX_AXIOMS_SAMPLE,
    MAX_SWEEP_POINTS,
    Report,
    Section,
)
from allocator.report.rounds_section import rounds_section
from allocator.report.sections import (
    axioms_section,
    cliff_section,
    coverage_section,
    fairness_section,
    histogram_section,
    lorenz_section,
    reconciliation_section,
    summary_section,
    voucher_by_loss_section,
)
from allocator.report.sweep_sections import (
    BUDGET_TITLE,
    SWEEP_TITLE,
    alpha_sweep_section,
    budget_section,
    skipped_section,
)
from allocator.report.words import rule_title
from allocator.runs.reader import refuse_output_in_run
from allocator.runs.store import atomic_write_text


def build_report(
    run_dir: str | Path,
    *,
    compare: Sequence[str | Path] = (),
    sweep_points: int = DEFAULT_SWEEP_POINTS,
    axioms_sample: int = DEFAULT_AXIOMS_SAMPLE,
) -> Report:
    """Gather every section of the report of ``run_dir`` (and the runs compared with it).

    Parameters
    ----------
    run_dir
        The run directory reported on.
    compare
        Further run directories shown beside it (voucher against loss, Lorenz curves, coverage,
        a line of finance checks each, audit, axioms).
    sweep_points
        Points of the alpha and budget sweeps (re-solved on the run's input data), 0 (skip) to
        :data:`~allocator.report.model.MAX_SWEEP_POINTS`.
    axioms_sample
        Users sampled per perturbed axiom, 0 (skip the section) to
        :data:`~allocator.report.model.MAX_AXIOMS_SAMPLE`.

    Returns
    -------
    Report
        ``report.ok`` is False when a finance check of any run fails; the report still holds
        every section, with the failures marked.

    Raises
    ------
    InputError
        ``sweep_points`` is out of range, or a run directory is missing, damaged or changed since
        its run, or its input files are (:func:`allocator.runs.reader.load_run`). A run directory
        that passes those checks but fails a finance check (e.g. a hand-edited manifest) is
        reported, with the failures marked.
    """
    if not 0 <= sweep_points <= MAX_SWEEP_POINTS:
        raise InputError(
            f"sweep points must be 0 (skip) to {MAX_SWEEP_POINTS}, not {sweep_points}."
        )
    if not 0 <= axioms_sample <= MAX_AXIOMS_SAMPLE:
        raise InputError(
            f"axioms sample must be 0 (skip) to {MAX_AXIOMS_SAMPLE:,} users, not {axioms_sample}."
        )
    taken: set[str] = set()
    main = load_report_run(Path(run_dir), taken)
    others = [load_report_run(Path(p), taken) for p in compare]
    runs = [main, *others]
    later = main.run.round > 1
    sections: list[Section] = [summary_section(runs)]
    if later:
        sections.append(rounds_section(main))
    sections += [
        reconciliation_section(runs),
        histogram_section(main),
        voucher_by_loss_section(runs),
        lorenz_section(runs),
        coverage_section(runs),
    ]
    rule = main.scenario.objective.rule
    named = rule_title(rule)
    held = (
        f"round {main.run.round} of a distribution holds every user at what they already hold; "
        "the sweeps solve its scenario from scratch, so they belong to the report of its "
        "round-1 run"
    )
    if sweep_points == 0 or later:
        why = "sweeps turned off (0 points)" if sweep_points == 0 else held
        sections.append(skipped_section("sweep", SWEEP_TITLE, why))
        sections.append(skipped_section("shadow-price", BUDGET_TITLE, why))
    elif rule != "alpha_fair":
        sections.append(
            skipped_section("sweep", SWEEP_TITLE, f"the {named} rule has no alpha to sweep")
        )
        sections.append(
            skipped_section(
                "shadow-price",
                BUDGET_TITLE,
                f"the {named} rule is not an optimisation: it has no shadow price to sweep the "
                "budget by",
            )
        )
    else:
        session, reason = open_session(main)
        if session is None:
            why = reason or "no data"
            sections.append(skipped_section("sweep", SWEEP_TITLE, why))
            sections.append(skipped_section("shadow-price", BUDGET_TITLE, why))
        else:
            sections.append(alpha_sweep_section(main, session, sweep_points))
            sections.append(budget_section(main, session, sweep_points))
    sections.append(cliff_section(main))
    sections.append(fairness_section(runs))
    rounds = [r.label for r in runs if r.run.round > 1]
    if axioms_sample == 0:
        sections.append(skipped_section("axioms", "Fairness axioms", "axioms turned off (0 users)"))
    elif rounds:
        why = (
            f"{', '.join(rounds)}: a later round of a distribution; the axiom audit solves a "
            "scenario from scratch, so it belongs to the round-1 run"
        )
        sections.append(skipped_section("axioms", "Fairness axioms", why))
    else:
        sections.append(axioms_section(runs, axioms_sample))
    failures = tuple(f"{r.label}: {c.name}" for r in runs for c in r.checks.failures)
    return Report(
        title=f"Allocation report: {main.label}",
        run_dir=str(main.run.path),
        compare=tuple(str(r.run.path) for r in others),
        sections=tuple(sections),
        failures=failures,
    )


def render(report: Report, fmt: str) -> str:
    """Render in ``fmt`` (one of :data:`~allocator.report.model.FORMATS`).

    Raises
    ------
    InputError
        ``fmt`` is not one of them.
    """
    if fmt == "html":
        return render_html(report)
    if fmt == "json":
        return render_json(report)
    if fmt == "md":
        return render_md(report)
    raise InputError(f"report format must be one of {', '.join(FORMATS)}, not {fmt!r}.")


def write_report(path: str | Path, report: Report, fmt: str) -> Path:
    """Render ``report`` in ``fmt`` and write it to ``path`` atomically (UTF-8, ``\\n`` newlines).

    The file appears complete or not at all (:func:`allocator.runs.store.atomic_write_text`).

    Raises
    ------
    InputError
        ``fmt`` is not a report format, or ``path`` is in a run directory
        (:func:`allocator.runs.reader.refuse_output_in_run`); nothing is written.
    """
    path = Path(path)
    refuse_output_in_run(path, "the report file")
    return atomic_write_text(path, render(report, fmt))
