"""An explanation as text: the status, the liquidations, why excluded or how the weight and the
amount follow, and the other scenarios (the JSON form is :meth:`Explanation.to_dict`)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from allocator.analysis.explain.wording import (
    STATUS_TEXT,
    cents_text,
    num,
    ratio_text,
    threshold_text,
    usd,
)
from allocator.kernel.money import format_usd

if TYPE_CHECKING:
    # Type-only: the result types call render_lines for their text.
    from allocator.analysis.explain.results import Explanation, PhaseIn

__all__ = ["render_lines"]

_BINDING_TEXT = {
    "floor": "the floor",
    "cap": "the cap",
    "coverage_cap": "the coverage cap",
    "phased_cap": "the cap scaled by the phase-in factor",
    "interior": "no bound (interior)",
    "held": "what the user already holds (no claw-back: a later round pays nobody less)",
}


def _binding(binding: str) -> str:
    if binding == "interior":
        return "between its bounds (no bound binds)"
    return f"set by {_BINDING_TEXT[binding]}"


def _phase_lines(p: PhaseIn) -> list[str]:
    bands = []
    if p.loss_band_usd is not None:
        bands.append(f"loss ({num(p.loss_band_usd[0])}, {num(p.loss_band_usd[1])}) USD")
    if p.ratio_band is not None:
        bands.append(
            f"loss ratio ({threshold_text(p.ratio_band[0])}, {threshold_text(p.ratio_band[1])})"
        )
    if not p.in_band:
        return [
            f"the rules phase in {' and '.join(bands)}; this user is past both thresholds: "
            f"phase factor 1, weight and cap not scaled"
        ]
    where = [
        name
        for name, inside in (("loss", p.in_loss_band), ("loss-ratio", p.in_ratio_band))
        if inside
    ]
    cov = "" if p.coverage_cap is None else f", coverage_cap {num(p.coverage_cap)} x loss"
    out = [
        f"in the {' and '.join(where)} phase-in band ({'; '.join(bands)})",
        f"phase factor = {p.formula}",
        f"it multiplies the weight (factor 'phase' below) and the cap: upper bound = floor to the "
        f"cent of min(cap {usd(p.cap_usd)} x {p.factor:.4g}{cov}), at least the floor = "
        f"{cents_text(p.upper_cents)} USD",
    ]
    if p.raised_to_one_cent:
        out.append("the scaled cap is below one cent, so it is raised to one cent")
    if p.cap_raised_to_floor:
        out.append(
            "this scaled cap is below the floor, so it is raised to the floor: nobody is paid "
            "a positive amount below the announced minimum"
        )
    return out


def render_lines(e: Explanation) -> list[str]:
    """The explanation as text, one line per item (:meth:`Explanation.lines`)."""
    out = [f"user {e.user_id}, scenario '{e.scenario}' (run {e.run_dir})"]
    if e.status == "paid" and e.amount is not None:
        band = ""
        if e.phase_in is not None and e.phase_in.in_band:
            band = f"; in the phase-in band (factor {e.phase_in.factor:.4g})"
        out.append(
            f"status: paid {cents_text(e.amount.voucher_cents)} USD, "
            f"{_binding(e.amount.binding)}{band}"
        )
    elif e.exclusion is not None:
        out.append(f"status: excluded ({e.exclusion.reason})")
    if e.rounds is not None:
        out.append(f"rounds: {e.rounds.sentence()}")
        if e.rounds.forfeited:
            out.append(
                "  a voucher expired unredeemed: the user forfeited and is paid nothing more"
            )
    out.append("")
    out.append("liquidations:")
    out.append(f"  {'product':<16} {'status':<20} {'events':>6} {'loss USD':>14} {'fees USD':>12}")
    for g in e.events:
        unpriced = f"  ({g.unpriced_events} without a price)" if g.unpriced_events else ""
        out.append(
            f"  {g.product:<16} {STATUS_TEXT[g.status]:<20} {g.n_events:>6} {usd(g.loss_usd):>14} "
            f"{usd(g.fee_usd):>12}{unpriced}"
        )
    out.append(
        f"  counted loss {usd(e.loss_usd)} USD (gross {usd(e.gross_loss_usd)}, depeg compensation "
        f"received {usd(e.depeg_comp_usd)})"
    )
    out.append(f"  net assets {usd(e.net_assets_usd)} USD; loss ratio {ratio_text(e.loss_ratio)}")
    if e.exclusion is not None:
        x = e.exclusion
        out += ["", "why excluded:", f"  rule: {x.rule}", f"  numbers: {x.detail}"]
        if x.distance:
            out.append(f"  distance: {x.distance}")
        if x.also_fails:
            out.append(f"  also fails: {', '.join(x.also_fails)}")
    if e.phase_in is not None:
        out += ["", "phase-in band:"] + [f"  {line}" for line in _phase_lines(e.phase_in)]
    if e.weight is not None:
        w = e.weight
        out += [
            "",
            (
                f"weight: w = exp(sum of factors) = {w.weight:,.6g}; median-weight user "
                f"{w.reference_user} has {w.reference_weight:,.6g}, so w / w_median = "
                f"{w.relative_weight:,.4g}"
            ),
            f"  {'factor':<22} {'log':>10} {'x factor':>12} {'vs median':>10} {'share':>7}  formula",
        ]
        for f in w.factors:
            out.append(
                f"  {f.name:<22} {f.log_contribution:>10.4f} {f.multiplier:>12,.4g} "
                f"{'x' + format(f.relative_multiplier, '.4g'):>10} {100 * f.share:>6.1f}%  {f.formula}"
            )
    if e.amount is not None:
        a = e.amount
        seg = (
            f" + segment adjustment {a.segment_adjustment:.6g} ({'+'.join(a.segments)})"
            if a.segments
            else ""
        )
        out += ["", "amount:"]
        if a.rule_formula is not None:
            out.append(f"  rule {a.rule_formula}")
        else:
            out.append(f"  price: shadow price {a.shadow_price:.6g}{seg} = {a.effective_price:.6g}")
        if a.rule_formula is None and a.closed_form_usd is not None and e.weight is not None:
            out.append(
                f"  closed form (w / price)^(1/alpha) = ({e.weight.weight:,.6g} / {a.effective_price:.6g})"
                f"^(1/{num(a.alpha)}) = {format_usd(a.closed_form_usd, decimals=4)} USD"
            )
        elif a.rule_formula is None:
            out.append(
                "  alpha = 0 (linear utility): users whose weight is above the price get their upper "
                "bound, below it their floor; users at the price share what is left"
            )
            if e.weight is not None:
                weight, price = e.weight.weight, a.effective_price
                sign = ">" if weight > price else "<" if weight < price else "="
                out.append(f"  weight {weight:,.6g} {sign} price {price:,.6g}")
        src = {"cap": "cap", "phased_cap": "cap x phase-in factor"}.get(
            a.upper_source, "coverage cap x loss"
        )
        low = {"held": "held before this round", "forfeited": "held (forfeited)"}.get(
            a.lower_source, "floor"
        )
        out.append(
            f"  bounds (whole cents): {low} {cents_text(a.lower_cents)}, upper "
            f"{cents_text(a.upper_cents)} ({src}); {_binding(a.binding)}"
        )
        if a.upper_formula != f"cap {cents_text(a.upper_cents)}":
            out.append(f"  upper bound = {a.upper_formula}")
        if a.continuous_usd is not None:
            verdict = (
                "reproduces it within a cent"
                if a.reproduces_within_cent
                else "is more than a cent away (see the note)"
            )
            what = "the rule" if a.rule_formula is not None else "the closed form"
            out.append(
                f"  clipped {format_usd(a.continuous_usd, decimals=4)} USD; paid {cents_text(a.voucher_cents)} USD "
                f"(difference {a.difference_usd:+.4f}): {what} {verdict}"
            )
    if e.other_scenarios is not None:
        out += ["", "under the other shipped scenarios (same data, this run's budget):"]
        for o in e.other_scenarios:
            if o.status == "paid":
                out.append(
                    f"  {o.scenario:<22} {cents_text(o.voucher_cents or 0):>12} USD  ({o.bound})"
                )
            elif o.status == "excluded":
                out.append(f"  {o.scenario:<22} {'excluded':>12}      ({o.reason}: {o.detail})")
            else:
                out.append(f"  {o.scenario:<22} {'not computed':>12}      ({o.detail})")
        if not e.other_scenarios:
            out.append("  (no shipped scenarios found)")
    for n in e.notes:
        out.append(f"note: {n}")
    return out
