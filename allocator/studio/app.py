"""The policy studio page: a marimo app (a notebook that is also a script).

Served by ``allocator studio`` (``marimo run`` on this file, with ``-- --data DIR --scenario
FILE``). Every view comes from :mod:`allocator.studio.views` and every allocation from
:class:`allocator.studio.engine.Studio`; this file only lays them out.
"""

import marimo

__generated_with = "0.25.2"
app = marimo.App(width="full", app_title="Allocator studio")


@app.cell
def _():
    import html

    import marimo as mo

    from allocator.errors import AllocatorError
    from allocator.studio import views as V
    from allocator.studio.engine import shared_studio
    from allocator.studio.knobs import RULE_LABELS, SECTIONS, knobs_for

    # `allocator studio` opened the studio in this process; `marimo run` on this file may pass
    # `-- --data DIR --scenario FILE`
    args = {k: str(v) for k, v in mo.cli_args().items() if v is not None}
    studio = shared_studio(args.get("data"), args.get("scenario"))
    return AllocatorError, RULE_LABELS, SECTIONS, V, html, knobs_for, mo, studio


@app.cell
def _(RULE_LABELS, SECTIONS, knobs_for, mo, studio):
    start = studio.values()

    def control(knob):
        value = start[knob.key]
        if knob.kind == "slider":
            return mo.ui.slider(
                knob.low, knob.high, step=knob.step, value=value, label=knob.label,
                show_value=True, include_input=True, debounce=False, full_width=True,
            )  # fmt: skip
        if knob.kind == "number":
            return mo.ui.number(
                knob.low, knob.high, step=knob.step, value=value, label=knob.label,
                full_width=True,
            )  # fmt: skip
        if knob.kind == "choice":
            words = RULE_LABELS if knob.key == "objective.rule" else {o: o for o in knob.options}
            options = {words[o]: o for o in knob.options}
            return mo.ui.dropdown(options, value=words[value], label=knob.label, full_width=True)
        if knob.kind == "switch":
            return mo.ui.switch(value=bool(value), label=knob.label)
        # optional numbers and region lists are typed as text: empty means "not set"
        text = "" if value is None else (value if isinstance(value, str) else f"{value:g}")
        return mo.ui.text(value=text, label=knob.label, full_width=True)

    knobs = knobs_for(studio.base)
    controls = mo.ui.dictionary({k.key: control(k) for k in knobs})
    panel = mo.vstack(
        [
            mo.md("## Allocator studio"),
            mo.md(
                f"Starting from **{studio.base.name}**: {studio.base.description} "
                "Move a knob and every view follows."
            ),
            *[
                mo.vstack(
                    [
                        mo.md(f"### {section}"),
                        *[
                            mo.vstack([controls[k.key], mo.md(f"<small>{k.help}</small>")])
                            for k in knobs
                            if k.section == section
                        ],
                    ]
                )
                for section in SECTIONS
                if any(k.section == section for k in knobs)
            ],
        ]
    )
    return controls, knobs, panel


@app.cell
def _(AllocatorError, controls, html, knobs, mo, studio):
    def parse(knob, value):
        if knob.kind == "optional_number":
            text = str(value).strip().replace(",", "")
            if not text:
                return None
            try:
                return float(text)
            except ValueError:
                raise AllocatorError(
                    f"{knob.label}: {value!r} is not a number (e.g. 0.5), nor empty"
                ) from None
        return value

    result, problem = None, None
    try:
        setting = {k.key: parse(k, controls.value[k.key]) for k in knobs}
        result = studio.evaluate(studio.scenario(setting))
    except AllocatorError as exc:
        problem = mo.callout(
            mo.md(f"**This setting cannot be paid.** {html.escape(exc.message)}"
                  + (f" *{html.escape(exc.hint)}*" if exc.hint else "")),
            kind="danger",
        )  # fmt: skip
    return problem, result


@app.cell
def _(mo):
    get_pinned, set_pinned = mo.state(None)
    return get_pinned, set_pinned


@app.cell
def _(mo, result, set_pinned, studio):
    def _pin(_):
        if result is not None:
            studio.pin(result)
            set_pinned(result)

    pin_button = mo.ui.button(label="Pin this setting as the reference", on_click=_pin)
    return (pin_button,)


@app.cell
def _(V, get_pinned, mo, pin_button, problem, result):
    pinned = get_pinned()
    ref = None if pinned is None else pinned.run
    if result is None:
        top = problem
    else:
        items = V.headline(result.run, ref)
        cards = [
            mo.Html(
                f"<div class='headline' data-label='{i.label}' style='padding:0.4rem 0.8rem;"
                "border:1px solid #d0d7de;border-radius:6px;min-width:11rem'>"
                f"<div style='font-size:0.8rem;color:#57606a'>{i.label}</div>"
                f"<div class='value' style='font-size:1.35rem;font-weight:600'>{i.value}</div>"
                + (f"<div style='font-size:0.75rem;color:#9a6700'>pinned: {i.pinned}</div>"
                   if i.pinned is not None else "")
                + "</div>"
            )
            for i in items
        ]  # fmt: skip
        status = mo.md(
            f"<small>Solved, rounded to the cent and certified in {result.seconds * 1000:,.0f} ms "
            f"({result.run.allocation.method}); "
            + ("no reference pinned." if pinned is None else
               f"reference: {pinned.scenario.name}, pinned.")
            + "</small>"
        )  # fmt: skip
        top = mo.vstack(
            [mo.hstack(cards, wrap=True, justify="start", align="start"), status, pin_button]
        )
    return ref, top


@app.cell
def _(V, mo, ref, result):
    if result is None:
        charts = mo.md("")
    else:
        run = result.run
        words = V.budget_in_words(run)
        moves = None if ref is None else V.moved(run, ref)
        cliff_words, cliff_chart = V.cliffs(run)
        charts = mo.vstack(
            [
                mo.md(f"**One million dollars more.** {words}"),
                mo.hstack(
                    [
                        V.histogram(run, ref),
                        V.coverage_by_band(run, ref),
                    ],
                    widths="equal",
                ),
                mo.hstack(
                    [
                        V.voucher_against_loss(run, ref),
                        V.lorenz_chart(run, ref),
                    ],
                    widths="equal",
                ),
                mo.md("### Against the pinned reference"),
                mo.md("Pin a setting to compare with it.")
                if moves is None
                else mo.vstack(
                    [
                        mo.md(moves.words()),
                        mo.ui.table(
                            moves.largest,
                            selection=None,
                            show_data_types=False,
                            format_mapping={"User": str},
                            show_column_summaries=False,
                        ),
                    ]
                ),
                mo.md("### The thresholds' cliffs"),
                mo.md("\n\n".join(cliff_words)),
                cliff_chart,
            ]
        )
    return (charts,)


@app.cell
def _(mo):
    axioms_button = mo.ui.run_button(label="Check the fairness properties (a few seconds)")
    lookup = mo.ui.text(label="User id", placeholder="e.g. 10000043")
    lookup_button = mo.ui.run_button(label="Explain this user")
    save_path = mo.ui.text(label="Save as", placeholder="scenarios/my_policy.toml", full_width=True)
    save_replace = mo.ui.checkbox(label="replace the file if it exists")
    save_button = mo.ui.run_button(label="Save the scenario")
    return axioms_button, lookup, lookup_button, save_button, save_path, save_replace


@app.cell
def _(AllocatorError, V, axioms_button, mo, result, studio):
    if result is not None and axioms_button.value:
        try:
            axioms_view = mo.ui.table(
                V.axioms_table(studio.axioms(result)),
                selection=None,
                show_data_types=False,
                show_column_summaries=False,
                wrapped_columns=["What theory says"],
            )
        except AllocatorError as exc:
            axioms_view = mo.callout(exc.message, kind="danger")
    else:
        axioms_view = mo.md("")
    return (axioms_view,)


@app.cell
def _(AllocatorError, html, lookup, lookup_button, mo, result, studio):
    explanation = mo.md("")
    if result is not None and lookup_button.value:
        text = lookup.value.strip()
        try:
            lines = studio.explain(result, int(text))
            explanation = mo.Html(
                "<pre class='explanation' style='font-size:0.8rem;white-space:pre-wrap'>"
                + html.escape("\n".join(lines))
                + "</pre>"
            )
        except ValueError:
            explanation = mo.callout(
                mo.md(html.escape(f"{text!r} is not a user id (a whole number)")), kind="warn"
            )
        except AllocatorError as exc:
            explanation = mo.callout(mo.md(html.escape(exc.message)), kind="warn")
    return (explanation,)


@app.cell
def _(AllocatorError, html, mo, result, save_button, save_path, save_replace, studio):
    saved = mo.md("")
    if result is not None and save_button.value:
        try:
            path = studio.save(
                result.scenario, save_path.value.strip(), overwrite=save_replace.value
            )
            saved = mo.callout(
                mo.md(f"Saved **{path}**. `allocator allocate --scenario {path}` pays exactly "
                      "these vouchers."),
                kind="success",
            )  # fmt: skip
        except AllocatorError as exc:
            saved = mo.callout(mo.md(html.escape(exc.message)), kind="danger")
    return (saved,)


@app.cell
def _(
    axioms_button,
    axioms_view,
    charts,
    explanation,
    lookup,
    lookup_button,
    mo,
    panel,
    save_button,
    save_path,
    save_replace,
    saved,
    top,
):
    tools = mo.vstack(
        [
            mo.md("### Fairness properties"),
            axioms_button,
            axioms_view,
            mo.md("### One user"),
            mo.hstack([lookup, lookup_button], justify="start"),
            explanation,
            mo.md("### Save"),
            mo.hstack([save_path, save_replace, save_button], justify="start"),
            saved,
        ]
    )
    mo.hstack([panel, mo.vstack([top, charts, tools])], widths=[1, 3], gap=2, align="start")


if __name__ == "__main__":
    app.run()
