"""A campaign's result as files: the JSON document of `lifetag campaign --out`, and a section of a lifetag
HTML report (`--report`).

The report contract (shared with `lifetag report`): a report holds the marker comment
`<!-- lifetag:campaign-sections -->` just before `</main>`; each campaign is one
`<section class="campaign" data-campaign="NAME">` inserted before the marker, or put in place of the
earlier section of the same campaign. A section is self-contained HTML: a heading, tables, and inline
SVG charts of the differences with their intervals; no script, no external resource. Every file is
written atomically (temporary file, then rename).
"""
from __future__ import annotations

import html
import json
import math
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from features.output import write_text
from serving.campaign import (NO_ORDER, CampaignError, CampaignResult, CampaignRun, format_figure, format_interval,
                              format_p)
from serving.locks import LockHeld, output_lock

__all__ = ["MARKER", "add_to_report", "campaign_section_html", "check_report", "check_result_path", "result_json",
           "write_result"]

MARKER = "<!-- lifetag:campaign-sections -->"

_TEXT = {
    "en": {
        "campaign": "Campaign", "window": "Window", "days": "days", "model": "model", "treated": "treatment",
        "control": "control", "measure": "measure", "difference": "difference", "ci": "CI", "p": "p-value",
        "lift": "relative lift", "verdict": "verdict", "split_ok": "Split as intended",
        "split_bad": "Sample-ratio mismatch", "conversion": "conversion", "orders": "orders per customer",
        "spend": "spend per customer", "by_rfm_segment": "By RFM segment at the start",
        "by_churn_tier": "By churn tier at the start", "overall": "all customers", "notes": "Notes",
        "unknown": "unknown ids", "chart": "Difference in {measure} (treatment - control) with its {confidence} interval",
        "higher": "higher", "lower": "lower", "no clear difference": "no clear difference",
        "too few customers": "too few customers",
    },
    # Headings and labels; the verdict sentence and the notes stay as the result states them (English).
    "zh": {
        "campaign": "活动", "window": "评估窗口", "days": "天", "model": "模型", "treated": "实验组",
        "control": "对照组", "measure": "指标", "difference": "差值", "ci": "置信区间", "p": "p 值",
        "lift": "相对提升", "verdict": "结论", "split_ok": "分组比例符合预期", "split_bad": "分组比例异常 (SRM)",
        "conversion": "转化率", "orders": "人均订单数", "spend": "人均消费",
        "by_rfm_segment": "按活动开始时的 RFM 分群", "by_churn_tier": "按活动开始时的流失风险等级",
        "overall": "全部客户", "notes": "说明", "unknown": "未知客户编号",
        "chart": "{measure}差值 (实验组 - 对照组) 及其 {confidence} 置信区间",
        "higher": "更高", "lower": "更低", "no clear difference": "无明显差异", "too few customers": "样本过少",
    },
}
_COLOURS = {"higher": "#1a7f37", "lower": "#cf222e"}
_GREY = "#6e7781"


# ---------------------------------------------------------------------------------------------
# JSON


def _finite(value: Any) -> Any:
    """The value with NaN and infinities as None, recursively (JSON has neither)."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    return value


def result_json(run: CampaignRun) -> str:
    """The run's JSON document (every figure, per campaign), indented."""
    return json.dumps(_finite(run.to_dict()), indent=2, ensure_ascii=False, allow_nan=False) + "\n"


def check_result_path(path: str | os.PathLike[str]) -> None:
    """Refuse an `--out` that is not a .json file name (checked before anything is read)."""
    if Path(path).suffix.lower() != ".json":
        raise CampaignError(f"--out {path}: a campaign result is a JSON document; give the file a .json name.")


def write_result(run: CampaignRun, path: str | os.PathLike[str]) -> Path:
    """Write the run's JSON document to `path`, atomically."""
    check_result_path(path)
    return write_text(result_json(run), path)


# ---------------------------------------------------------------------------------------------
# The report section


def campaign_section_html(result: CampaignResult | Mapping[str, Any], lang: str = "en") -> str:
    """One campaign's result as a self-contained `<section class="campaign" data-campaign="NAME">`.

    `result` is a CampaignResult or its `to_dict()` (one entry of the JSON's `campaigns`); `lang` is
    `en` or `zh`. Every text is escaped; the section needs no script, style sheet or other file.
    """
    if lang not in _TEXT:
        raise CampaignError(f"lang {lang!r}: a campaign section is written in {' or '.join(_TEXT)}.")
    r = _finite(result.to_dict() if isinstance(result, CampaignResult) else dict(result))
    t = _TEXT[lang]
    e = html.escape
    confidence = f"{r['confidence']:.0%}"
    window = r["window"]
    parts = [
        f'<section class="campaign" data-campaign="{e(r["campaign"], quote=True)}">',
        f"<h2>{e(t['campaign'])}: {e(r['campaign'])}</h2>",
        f"<p>{e(t['window'])}: {e(window['start'])} – {e(window['last_day'])} ({window['days']} {e(t['days'])}); "
        f"{e(t['model'])} {e(r['model_version'])}; {e(t['treated'])} {r['counts']['treatment']:,}, "
        f"{e(t['control'])} {r['counts']['control']:,}.</p>",
        f"<p><strong>{e(r['verdict'])}</strong></p>",
        _split_html(r, t),
        _overall_table(r, t, confidence, lang),
        _forest_svg(r, "conversion", t, confidence, lang),
        _forest_svg(r, "spend", t, confidence, lang),
        _strata_table(r, "rfm_segment", t, confidence, lang),
        _strata_table(r, "churn_tier", t, confidence, lang),
    ]
    if r["notes"]:
        parts.append(f"<h3>{e(t['notes'])}</h3><ul>" + "".join(f"<li>{e(n)}</li>" for n in r["notes"]) + "</ul>")
    parts.append("</section>")
    return "\n".join(p for p in parts if p)


def _split_html(r: Mapping[str, Any], t: dict[str, str]) -> str:
    s = r["split"]
    words = t["split_bad"] if s["mismatch"] else t["split_ok"]
    style = ' style="color:#cf222e"' if s["mismatch"] else ""
    unknown = r["counts"]["unknown_treatment"] + r["counts"]["unknown_control"]
    extra = f"; {t['unknown']}: {unknown:,}" if unknown else ""
    return (f"<p{style}>{html.escape(words)}: {s['observed_share']:.1%} / {s['intended_share']:.1%} "
            f"(chi-square {html.escape(format_p(s['p_value']))}){html.escape(extra)}</p>")


def _overall_table(r: Mapping[str, Any], t: dict[str, str], confidence: str, lang: str) -> str:
    e = html.escape
    head = [t["measure"], t["treated"], t["control"], t["difference"], f"{confidence} {t['ci']}", t["p"], t["lift"],
            t["verdict"]]
    rows = []
    for m in r["overall"]:
        lift = f"{m['relative_lift']:+.1%}" if m["relative_lift"] is not None else "-"
        name = m["measure"]
        cells = [t[name], format_figure(name, m["treatment"]), format_figure(name, m["control"]),
                 format_figure(name, m["difference"], True), format_interval(m), format_p(m["p_value"]) or "-", lift]
        rows.append("<tr>" + "".join(f"<td>{e(c)}</td>" for c in cells) + _verdict_cell(m["verdict"], t) + "</tr>")
    return ('<table class="campaign-overall"><thead><tr>' + "".join(f"<th>{e(h)}</th>" for h in head)
            + "</tr></thead><tbody>" + "".join(rows) + "</tbody></table>")


def _verdict_cell(verdict: str, t: dict[str, str]) -> str:
    colour = _COLOURS.get(verdict, _GREY)
    return f'<td style="color:{colour}">{html.escape(t.get(verdict, verdict))}</td>'


def _strata_table(r: Mapping[str, Any], by: str, t: dict[str, str], confidence: str, lang: str) -> str:
    e = html.escape
    strata = [s for s in r["strata"] if s["by"] == by]
    if not strata:
        return ""
    head = ["", t["treated"], t["control"], f"{t['conversion']} ({t['treated']} / {t['control']})", t["difference"],
            f"{confidence} {t['ci']}", t["p"], t["verdict"], f"{t['spend']} {t['difference']}"]
    rows = []
    for s in strata:
        conv = next(m for m in s["measures"] if m["measure"] == "conversion")
        spend = next(m for m in s["measures"] if m["measure"] == "spend")
        label = s["label_zh"] if lang == "zh" else s["label"]
        cells = [label, f"{s['treatment']:,}", f"{s['control']:,}",
                 f"{format_figure('conversion', conv['treatment'])} / {format_figure('conversion', conv['control'])}",
                 format_figure("conversion", conv["difference"], True),
                 format_interval(conv), format_p(conv["p_value"]) or "-"]
        verdict = (f'<td style="color:{_GREY}" title="{e(s["note"], quote=True)}">{e(t[conv["verdict"]])}</td>'
                   if s["note"] else _verdict_cell(conv["verdict"], t))
        rows.append("<tr>" + "".join(f"<td>{e(c)}</td>" for c in cells) + verdict
                    + f"<td>{e(format_figure('spend', spend['difference'], True))}</td></tr>")
    return (f"<h3>{e(t['by_' + by])}</h3>" f'<table class="campaign-strata" data-by="{e(by)}"><thead><tr>'
            + "".join(f"<th>{e(h)}</th>" for h in head) + "</tr></thead><tbody>" + "".join(rows) + "</tbody></table>")


def _forest_svg(r: Mapping[str, Any], measure: str, t: dict[str, str], confidence: str, lang: str) -> str:
    """An inline SVG: the difference of `measure` with its interval, overall and per stratum with a verdict."""
    rows = [(t["overall"], next(m for m in r["overall"] if m["measure"] == measure))]
    for s in r["strata"]:
        # Customers without an order before the start are the same stratum by segment and by tier: once.
        if not s["note"] and not (s["by"] == "churn_tier" and s["key"] == NO_ORDER):
            rows.append((s["label_zh"] if lang == "zh" else s["label"],
                         next(m for m in s["measures"] if m["measure"] == measure)))
    rows = [(label, m) for label, m in rows if m["ci_low"] is not None]
    if not rows:
        return ""
    reach = max(max(abs(m["ci_low"]), abs(m["ci_high"])) for _, m in rows) or 1.0
    left, width, row_h, top = 190, 320, 20, 24
    axis = top + row_h * len(rows) + 12
    height = axis + 6

    def x(value: float) -> float:
        return left + width / 2 + value / reach * (width / 2 - 6)

    title = t["chart"].format(measure=t[measure], confidence=confidence)
    e = html.escape
    marks = [f'<text x="0" y="14" font-size="12" font-weight="bold">{e(title)}</text>',
             f'<line x1="{x(0):.1f}" y1="{top - 4}" x2="{x(0):.1f}" y2="{axis - 10}" stroke="{_GREY}" '
             'stroke-dasharray="3,3"/>']
    for value, anchor in ((-reach, "start"), (0.0, "middle"), (reach, "end")):
        marks.append(f'<text x="{x(value):.1f}" y="{axis:.1f}" font-size="10" fill="{_GREY}" text-anchor="{anchor}">'
                     f'{e(format_figure(measure, value, signed=True)) if value else "0"}</text>')
    for i, (label, m) in enumerate(rows):
        y = top + row_h * i + row_h / 2
        colour = _COLOURS.get(m["verdict"], _GREY)
        marks += [
            f'<text x="0" y="{y + 4:.1f}" font-size="11">{e(str(label))}</text>',
            f'<line x1="{x(m["ci_low"]):.1f}" y1="{y:.1f}" x2="{x(m["ci_high"]):.1f}" y2="{y:.1f}" '
            f'stroke="{colour}" stroke-width="2"/>',
            f'<circle cx="{x(m["difference"]):.1f}" cy="{y:.1f}" r="4" fill="{colour}">'
            f'<title>{e(format_figure(measure, m["difference"], True))} ({e(format_interval(m))})</title></circle>',
        ]
    return (f'<svg class="campaign-chart" role="img" aria-label="{e(title, quote=True)}" '
            f'xmlns="http://www.w3.org/2000/svg" width="{left + width + 10}" height="{height}" '
            f'viewBox="0 0 {left + width + 10} {height}">' + "".join(marks) + "</svg>")


# ---------------------------------------------------------------------------------------------
# Adding the section to a report


def add_to_report(report: str | os.PathLike[str], result: CampaignResult | Mapping[str, Any],
                  lang: str = "en") -> str:
    """Put the campaign's section into the lifetag HTML report at `report`, atomically: in place of the
    earlier section of the same campaign, else just before the marker. Returns 'added' or 'replaced'."""
    path = Path(report)
    section = campaign_section_html(result, lang)
    name = result.campaign if isinstance(result, CampaignResult) else result["campaign"]
    try:
        with output_lock(str(path.resolve())):
            text = _read_report(path)
            updated, how = _with_section(text, section, name, path)
            write_text(updated, path)
    except LockHeld as held:
        raise CampaignError(f"--report {report}: another lifetag run is writing this report right now "
                            f"({held.holder}); wait for it to finish and run again. The report was not changed.") from None
    return how


def check_report(report: str | os.PathLike[str]) -> None:
    """Refuse, before anything is computed, a report that cannot take a campaign section (missing, not
    UTF-8, no marker); `add_to_report` checks again when it writes."""
    path = Path(report)
    _require_marker(_read_report(path), path)


def _read_report(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise CampaignError(f"--report {path}: no such file. The campaign is added to an existing lifetag report: "
                            "make one with `lifetag report` first, or leave --report out.") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise CampaignError(f"--report {path}: cannot read it as a UTF-8 HTML report ({exc}).") from None


def _with_section(text: str, section: str, name: str, path: Path) -> tuple[str, str]:
    """The report text with `section` in place of campaign `name`'s earlier section, or before the marker."""
    _require_marker(text, path)
    earlier = re.compile(r'<section class="campaign" data-campaign="' + re.escape(html.escape(name, quote=True))
                         + r'">.*?</section>', re.S)
    if earlier.search(text):
        return earlier.sub(lambda _: section, text, count=1), "replaced"
    return text.replace(MARKER, section + "\n" + MARKER, 1), "added"


def _require_marker(text: str, path: Path) -> None:
    if MARKER not in text:
        raise CampaignError(
            f"--report {path}: the file has no `{MARKER}` marker, so there is no agreed place for campaign sections "
            "(it is not a lifetag report, or was made by a lifetag before campaigns). Make the report with "
            "`lifetag report`, or pass another --report. The file was not changed.")
