"""The insight report's page: Plotly figures and HTML tables from `serving.report.ReportData`, in English or Chinese.

One self-contained file: plotly.js is embedded once in the head, each chart's figure is a JSON
block beside its `<div class="chart">`, and one small script draws them all; no script, style,
font or picture is fetched from anywhere. Every heading, label, axis title and segment name comes
from `TEXT` (or the config's Chinese segment labels), so `lang="zh"` gives the whole page in
Chinese; values written by the scoring run (reasons, scenario tag names, customer ids) stay as the
tags file has them. `<main>` ends with the marker `CAMPAIGN_MARKER`, where `lifetag campaign
--report` inserts its sections.
"""
from __future__ import annotations

import html
import json
from datetime import datetime, timezone
from typing import Any

import numpy as np
import pandas as pd

from configs.schema import RFM_SEGMENT_KEYS, Config

__all__ = ["CAMPAIGN_MARKER", "SECTIONS", "STAGES", "TEXT", "render"]

CAMPAIGN_MARKER = "<!-- lifetag:campaign-sections -->"
SECTIONS = ("kpis", "segments", "lifecycle", "value-at-risk", "cohorts", "clusters", "model")
STAGES = ("registered", "new", "active", "at_risk", "dormant_lost")  # the lifecycle funnel, as tagged

# Every text of the page: key -> (English, Chinese). `{name}` fields are filled in by the caller.
TEXT: dict[str, tuple[str, str]] = {
    "title": ("Customer insight report", "客户洞察报告"),
    "subtitle": ("{customers} customers tagged at as_of {as_of} with model {version}; made {made}",
                 "截至 {as_of}，模型 {version} 为 {customers} 位客户打标；生成于 {made}"),
    "kpis": ("Key figures", "关键指标"),
    "kpi_customers": ("Customers", "客户数"),
    "kpi_customers_note": ("tagged; {registered} of them registered without an order", "已打标，其中 {registered} 位注册未购"),
    "kpi_active": ("Active customers", "活跃客户"),
    "kpi_active_note": ("lifecycle stage new or active ({share} of all)", "生命周期为新客或活跃（占 {share}）"),
    "kpi_repurchase": ("Repurchase rate", "复购率"),
    "kpi_repurchase_note": ("buyers with two or more orders", "下单两次及以上的买家占比"),
    "kpi_retention": ("Monthly retention", "月留存率"),
    "kpi_retention_note": ("buyers of a month who buy again the next month, last 12 complete months",
                           "近 12 个完整月中，当月买家次月再次购买的比例"),
    "kpi_revenue": ("Revenue", "营收"),
    "kpi_revenue_note": ("net spend before as_of, shop currency", "截至日前的净消费（店铺货币）"),
    "kpi_contribution": ("Segment contribution", "细分贡献"),
    "kpi_contribution_note": ("{segment}: {share} of revenue", "{segment}：占营收 {share}"),
    "kpi_ltv_total": ("Predicted LTV, total", "预测 LTV 总额"),
    "kpi_ltv_total_note": ("expected net spend in the next {days} days, shop currency",
                           "未来 {days} 天预期净消费（店铺货币）"),
    "kpi_ltv_mean": ("Predicted LTV, mean", "预测 LTV 均值"),
    "kpi_ltv_mean_note": ("per buyer, shop currency", "每位买家（店铺货币）"),
    "kpi_var": ("Value at risk", "风险价值"),
    "kpi_var_note": ("sum of churn risk x predicted LTV, shop currency", "流失风险 × 预测 LTV 之和（店铺货币）"),
    "segments": ("RFM segments", "RFM 客户细分"),
    "segments_intro": ("The eight classic RFM groups: how many customers each holds, how much of the revenue they "
                       "brought, and what to do with them.",
                       "八类经典 RFM 客户群：各群客户数、营收贡献以及建议的运营动作。"),
    "segment_map": ("RFM segment map: tile size = customers, colour = share of revenue",
                    "RFM 细分地图：面积 = 客户数，颜色 = 营收占比"),
    "segment_contribution": ("Segment contribution: share of customers and of revenue", "细分贡献：客户占比与营收占比"),
    "share_axis": ("share of all (%)", "占整体比例（%）"),
    "share_customers": ("customers", "客户"),
    "share_revenue": ("revenue", "营收"),
    "segment_axis": ("RFM segment", "RFM 细分"),
    "col_segment": ("segment", "细分"),
    "col_customers": ("customers", "客户数"),
    "col_share": ("share", "占比"),
    "col_revenue": ("revenue", "营收"),
    "col_revenue_share": ("revenue share", "营收占比"),
    "col_mean_churn": ("mean churn risk", "平均流失风险"),
    "col_ltv": ("predicted LTV", "预测 LTV"),
    "col_action": ("recommended action", "建议动作"),
    "lifecycle": ("Lifecycle and risk", "生命周期与风险"),
    "funnel": ("Lifecycle funnel: customers per stage, as tagged", "生命周期漏斗：各阶段客户数（按标签）"),
    "funnel_axis": ("customers", "客户数"),
    "funnel_note": ("Stages in lifecycle order, each customer in one stage; the share is of all tagged customers.",
                    "按生命周期顺序排列，每位客户只属于一个阶段；百分比为占全部客户的比例。"),
    "funnel_no_registered": (" No customers table was scored, so there is no registered stage.",
                             " 本次打分未提供客户表，因此没有“注册未购”阶段。"),
    "stage_registered": ("registered, no order", "注册未购"),
    "stage_new": ("new", "新客"),
    "stage_active": ("active", "活跃"),
    "stage_at_risk": ("at risk", "有流失风险"),
    "stage_dormant_lost": ("dormant / lost", "沉睡 / 流失"),
    "churn_distribution": ("Churn risk distribution", "流失风险分布"),
    "churn_axis": ("churn risk: probability of no order in the next {days} days (%)", "流失风险：未来 {days} 天不下单的概率（%）"),
    "customers_axis": ("customers", "客户数"),
    "ltv_distribution": ("Predicted LTV distribution", "预测 LTV 分布"),
    "ltv_axis": ("predicted LTV: net spend in the next {days} days (shop currency)",
                 "预测 LTV：未来 {days} 天净消费（店铺货币）"),
    "ltv_note": ("Bins up to the 99th percentile; the last bin holds everyone above.", "分箱至第 99 百分位，最后一箱包含其余所有客户。"),
    "value_at_risk": ("Largest values at risk", "风险价值最高的客户"),
    "var_intro": ("The customers whose loss would cost most: churn risk x predicted LTV.",
                  "流失损失最大的客户：流失风险 × 预测 LTV。"),
    "col_customer": ("customer", "客户"),
    "col_stage": ("lifecycle stage", "生命周期"),
    "col_churn_tier": ("churn tier", "流失等级"),
    "col_value_tier": ("value tier", "价值等级"),
    "col_churn_risk": ("churn risk", "流失风险"),
    "col_var": ("value at risk", "风险价值"),
    "col_tags": ("scenario tags", "场景标签"),
    "col_reasons": ("reasons", "原因"),
    "reasons_note": ("", "原因与场景标签名称按打分结果原文显示（英文）。"),
    "tier_high": ("high", "高"),
    "tier_medium": ("medium", "中"),
    "tier_low": ("low", "低"),
    "cohorts": ("Cohort retention", "同期群留存"),
    "cohort_heatmap": ("Cohort retention: share of each first-order month's customers buying k months later",
                       "同期群留存：各首单月份客户在第 k 个月再次购买的比例"),
    "cohort_x": ("months since first order", "距首单月数"),
    "cohort_y": ("first-order month (cohort)", "首单月份（同期群）"),
    "cohort_colour": ("% of cohort buying", "购买客户占比（%）"),
    "cohort_note": ("The latest {months} first-order months; month 0 is the first order itself (100%).",
                    "最近 {months} 个首单月份；第 0 个月即首单本身（100%）。"),
    "clusters": ("Behavioural clusters", "行为聚类"),
    "clusters_intro": ("k-means on scaled behaviour ({features}); k = {k}, the best silhouette ({silhouette}) in "
                       "{low}-{high}, fitted on a fixed sample of {sample} buyers; every buyer is then assigned. Each "
                       "cluster is described by how it differs from all buyers.",
                       "基于标准化行为特征（{features}）的 k-means 聚类；k = {k}，在 {low}–{high} 中轮廓系数最佳"
                       "（{silhouette}），在固定的 {sample} 位买家样本上拟合，再为每位买家分配聚类。每个聚类按其与整体的差异描述。"),
    "clusters_none": ("No clusters: {why}.", "无聚类：{why}。"),
    "cluster_sizes": ("Cluster sizes", "聚类规模"),
    "cluster_profile": ("How each cluster differs from all buyers (z-score of its mean)", "各聚类与全部买家的差异（均值的 z 分数）"),
    "cluster_axis": ("cluster", "聚类"),
    "cluster_feature_axis": ("behaviour", "行为特征"),
    "cluster_colour": ("z-score (spreads from the average)", "z 分数（标准差）"),
    "cluster_label": ("cluster {n}", "聚类 {n}"),
    "col_cluster": ("cluster", "聚类"),
    "col_description": ("description", "描述"),
    "feature_recency_days": ("days since last order", "距上次购买天数"),
    "feature_frequency": ("orders", "订单数"),
    "feature_monetary_mean": ("mean order value", "平均客单价"),
    "feature_gap_median_days": ("days between orders", "购买间隔天数"),
    "feature_weekend_share": ("weekend share", "周末占比"),
    "feature_discount_share": ("discount share", "优惠订单占比"),
    "feature_distinct_categories": ("categories", "品类数"),
    "feature_return_rate": ("return rate", "退货率"),
    "feature_novdec_share": ("Nov-Dec share", "11–12 月占比"),
    "model": ("Model", "模型"),
    "model_intro": ("Model version {version}, trained at as_of {trained}; validation score {score} (mean of churn and "
                    "repurchase ROC AUC and LTV Gini). Validation is out of time: the latest cut-off before the "
                    "training as_of, held out from fitting.",
                    "模型版本 {version}，训练截至 {trained}；验证得分 {score}（流失与复购 ROC AUC 及 LTV Gini 的均值）。"
                    "验证为时间外验证：训练截至日前最近一个切分点，不参与拟合。"),
    "model_missing": ("Not shown: {why}", "未显示：{why}"),
    "metrics_table": ("Validation metrics: the model against the baselines", "验证指标：模型与基线对比"),
    "col_target": ("target", "目标"),
    "col_model": ("model", "模型"),
    "target_churn": ("churn ({days} days)", "流失（{days} 天）"),
    "target_repurchase": ("repurchase ({days} days)", "复购（{days} 天）"),
    "target_ltv": ("LTV ({days} days)", "LTV（{days} 天）"),
    "model_model": ("lifetag model", "lifetag 模型"),
    "model_recency_heuristic": ("recency heuristic (baseline)", "近度启发式（基线）"),
    "model_bgnbd": ("BG/NBD (baseline)", "BG/NBD（基线）"),
    "model_run_rate": ("run rate (baseline)", "历史均速（基线）"),
    "model_bgnbd_gg": ("BG/NBD + Gamma-Gamma (baseline)", "BG/NBD + Gamma-Gamma（基线）"),
    "metric_roc_auc": ("ROC AUC", "ROC AUC"),
    "metric_pr_auc": ("PR AUC", "PR AUC"),
    "metric_brier": ("Brier", "Brier 分数"),
    "metric_ece": ("calibration error (ECE)", "校准误差（ECE）"),
    "metric_lift_top_decile": ("lift, top 10%", "前 10% 提升度"),
    "metric_spearman": ("Spearman", "Spearman 相关"),
    "metric_gini_normalised": ("normalised Gini", "归一化 Gini"),
    "metric_decile_mape": ("decile error (MAPE)", "十分位误差（MAPE）"),
    "metric_total_ratio": ("total predicted / actual", "预测总额 / 实际"),
    "metrics_read": ("Higher is better for ROC AUC, PR AUC, lift, Spearman and Gini; lower for Brier, calibration "
                     "error and decile error; total predicted / actual is best at 1.",
                     "ROC AUC、PR AUC、提升度、Spearman 与 Gini 越高越好；Brier、校准误差与十分位误差越低越好；"
                     "预测总额 / 实际越接近 1 越好。"),
    "calibration": ("Calibration: {target}, validation cut-off {cutoff}", "校准曲线：{target}，验证切分点 {cutoff}"),
    "calibration_x": ("mean predicted probability in bin (%)", "分箱内平均预测概率（%）"),
    "calibration_y": ("observed rate in bin (%)", "分箱内实际发生率（%）"),
    "calibration_read": ("How to read: each point is a tenth of the customers by predicted probability; on the "
                         "diagonal, the predicted probability is what really happened, above it the model "
                         "under-predicts, below it over-predicts.",
                         "读法：每个点是按预测概率划分的十分之一客户；落在对角线上表示预测概率与实际一致，"
                         "在其上方表示模型低估，在其下方表示高估。"),
    "perfect": ("perfectly calibrated", "完全校准"),
    "gain": ("Cumulative gain: {target}, validation cut-off {cutoff}", "累积增益：{target}，验证切分点 {cutoff}"),
    "gain_x": ("customers targeted, highest scores first (%)", "按得分从高到低触达的客户（%）"),
    "gain_y_churn": ("churners reached (% of all who churned)", "覆盖的流失客户（占全部流失客户 %）"),
    "gain_y_repurchase": ("buyers reached (% of all who bought)", "覆盖的复购客户（占全部复购客户 %）"),
    "gain_read": ("How to read: contacting the top x% of customers by score reaches y% of all who churned (or "
                  "bought); the further the curve above the diagonal (random targeting), the better.",
                  "读法：按得分触达前 x% 的客户，可覆盖 y% 的实际流失（或购买）客户；曲线越高于对角线（随机触达）越好。"),
    "random": ("random targeting", "随机触达"),
    "footer": ("Made by lifetag report from {tags} and the orders it was scored from; every chart is drawn in this "
               "file, nothing is fetched from the network.",
               "由 lifetag report 根据 {tags} 及其打分所用订单生成；所有图表均在本文件内绘制，不从网络获取任何内容。"),
}

_FONT = ("system-ui, -apple-system, 'Segoe UI', Roboto, 'Noto Sans CJK SC', 'Noto Sans SC', 'PingFang SC', "
         "'Microsoft YaHei', sans-serif")
_COLOURS = ["#2f6690", "#d1495b", "#edae49", "#66a182", "#8e6c8a", "#3a7ca5", "#e07a5f", "#81b29a"]
_CHART_HEIGHT = 380
_SEQUENTIAL = [[0.0, "#f7fbff"], [0.25, "#c6dbef"], [0.5, "#6baed6"], [0.75, "#2171b5"], [1.0, "#08306b"]]


class _Words:
    """Texts, numbers and names in one language."""

    def __init__(self, lang: str, config: Config) -> None:
        self.lang, self.zh, self.config = lang, lang == "zh", config

    def __call__(self, key: str, **fields: Any) -> str:
        return TEXT[key][self.zh].format(**fields)

    def segment(self, key: str) -> str:
        info = self.config.rfm.segments.get(key)
        if info is None:
            return key
        return info.label_zh if self.zh else info.label

    def action(self, key: str) -> str:
        info = self.config.rfm.segments.get(key)
        if info is None:
            return ""
        return (info.action_zh or info.action) if self.zh else info.action

    def tier(self, value: Any) -> str:
        return self(f"tier_{value}") if isinstance(value, str) and f"tier_{value}" in TEXT else _text(value)

    def stage(self, value: Any) -> str:
        if value in ("dormant", "churned"):
            value = "dormant_lost"
        return self(f"stage_{value}") if isinstance(value, str) and f"stage_{value}" in TEXT else _text(value)


def _text(value: Any) -> str:
    """A value as table text; empty for a missing one."""
    if value is None or (isinstance(value, float) and not np.isfinite(value)):
        return ""
    return str(value)


def _number(value: float, decimals: int = 0) -> str:
    return "-" if value is None or not np.isfinite(value) else f"{value:,.{decimals}f}"


def _percent(value: float, decimals: int = 1) -> str:
    return "-" if value is None or not np.isfinite(value) else f"{value:.{decimals}%}"


# ---------------------------------------------------------------------------------------------
# Figures


def _layout(title: str, x_title: str = "", y_title: str = "", **extra: Any) -> dict[str, Any]:
    """A chart's layout: its title, axis titles, the page's font and colours."""
    return {"title": {"text": title, "x": 0.01, "font": {"size": 16}}, "height": _CHART_HEIGHT,
            "font": {"family": _FONT, "size": 12}, "colorway": _COLOURS, "paper_bgcolor": "white",
            "plot_bgcolor": "white", "margin": {"l": 70, "r": 30, "t": 60, "b": 60},
            "xaxis": {"title": {"text": x_title}, "gridcolor": "#e5e5e5", "zeroline": False, "automargin": True},
            "yaxis": {"title": {"text": y_title}, "gridcolor": "#e5e5e5", "zeroline": False, "automargin": True},
            "legend": {"orientation": "h", "y": -0.25}, "separators": ".,", **extra}


def _segment_frame(data: Any) -> pd.DataFrame:
    """The segments with their shares of customers and revenue, largest revenue first."""
    frame = data.segments.copy()
    frame["share"] = frame["customers"] / max(frame["customers"].sum(), 1)
    total = frame["revenue"].sum()
    frame["revenue_share"] = frame["revenue"] / total if total else np.nan
    order = {k: i for i, k in enumerate(RFM_SEGMENT_KEYS)}
    return frame.sort_values(["revenue", "rfm_segment"], ascending=[False, True],
                             key=lambda s: s if s.name == "revenue" else s.map(order)).reset_index(drop=True)


def _segment_map(frame: pd.DataFrame, w: _Words) -> dict[str, Any]:
    labels = [w.segment(k) for k in frame["rfm_segment"]]
    text = [f"{w('col_customers')} {c:,} ({s:.1%})<br>{w('col_revenue_share')} {r:.1%}"
            for c, s, r in zip(frame["customers"], frame["share"], frame["revenue_share"].fillna(0))]
    root = w("segments")
    trace = {"type": "treemap", "ids": [root, *frame["rfm_segment"]], "labels": [root, *labels],
             "parents": ["", *([root] * len(labels))], "values": [int(frame["customers"].sum()), *frame["customers"]],
             "branchvalues": "total", "text": ["", *text], "textinfo": "label+text",
             "marker": {"colors": [0.0, *(frame["revenue_share"].fillna(0) * 100).round(2)], "colorscale": _SEQUENTIAL,
                        "cmin": 0, "colorbar": {"title": {"text": w("col_revenue_share") + " (%)"}},
                        "line": {"color": "white", "width": 2}, "pad": {"t": 0, "l": 0, "r": 0, "b": 0}},
             "pathbar": {"visible": False}, "hovertemplate": "%{label}<br>%{text}<extra></extra>"}
    layout = _layout(w("segment_map"))
    layout["margin"] = {"l": 10, "r": 10, "t": 60, "b": 10}
    return {"data": [trace], "layout": layout}


def _segment_contribution(frame: pd.DataFrame, w: _Words) -> dict[str, Any]:
    labels = [w.segment(k) for k in frame["rfm_segment"]]
    traces = []
    for column, name in (("share", w("share_customers")), ("revenue_share", w("share_revenue"))):
        values = (frame[column].fillna(0) * 100).round(2).tolist()
        traces.append({"type": "bar", "orientation": "h", "name": name, "y": labels, "x": values,
                       "text": [f"{v:.1f}%" for v in values], "textposition": "outside",
                       "hovertemplate": "%{y}: %{x:.1f}%<extra>" + name + "</extra>"})
    layout = _layout(w("segment_contribution"), w("share_axis"), w("segment_axis"), barmode="group")
    layout["yaxis"]["autorange"] = "reversed"
    top = max([0.0, *frame["share"].fillna(0), *frame["revenue_share"].fillna(0)]) * 100
    layout["xaxis"].update({"range": [0, top * 1.18 + 1], "ticksuffix": "%"})
    layout["height"] = 460
    return {"data": traces, "layout": layout}


def _stage_counts(stages: dict[str, int]) -> dict[str, int]:
    """Customers per funnel stage, dormant and churned together."""
    counts = {s: int(stages.get(s, 0)) for s in STAGES if s != "dormant_lost"}
    counts["dormant_lost"] = int(stages.get("dormant", 0)) + int(stages.get("churned", 0))
    return counts


def _funnel(stages: dict[str, int], total: int, w: _Words) -> dict[str, Any]:
    counts = _stage_counts(stages)
    if not counts["registered"]:
        counts.pop("registered")
    names = [w.stage(s) for s in counts]
    values = list(counts.values())
    shares = [v / total if total else 0.0 for v in values]
    trace = {"type": "funnel", "y": names, "x": values, "customdata": shares,
             "texttemplate": "%{x:,} (%{customdata:.1%})", "textposition": "inside",
             "hovertemplate": "%{y}: %{x:,} (%{customdata:.1%})<extra></extra>",
             "marker": {"color": _COLOURS[: len(values)]}}
    return {"data": [trace], "layout": _layout(w("funnel"), w("funnel_axis"))}


def _churn_distribution(hist: pd.DataFrame, days: int, w: _Words) -> dict[str, Any]:
    middle = ((hist["bin_start"] + hist["bin_end"]) / 2 * 100).tolist()
    trace = {"type": "bar", "x": middle, "y": hist["customers"].tolist(), "width": 100 / len(hist) * 0.95,
             "customdata": np.column_stack([hist["bin_start"] * 100, hist["bin_end"] * 100]).tolist(),
             "hovertemplate": "%{customdata[0]:.0f}-%{customdata[1]:.0f}%: %{y:,}<extra></extra>",
             "marker": {"color": _COLOURS[1]}}
    layout = _layout(w("churn_distribution"), w("churn_axis", days=days), w("customers_axis"))
    layout["xaxis"].update({"range": [0, 100], "dtick": 10, "ticksuffix": "%"})
    layout["yaxis"]["tickformat"] = ",d"
    return {"data": [trace], "layout": layout}


def _ltv_distribution(hist: pd.DataFrame, days: int, w: _Words) -> dict[str, Any]:
    labels = [f"≥ {a:,.0f}" if not np.isfinite(b) else f"{a:,.0f}-{b:,.0f}"
              for a, b in zip(hist["bin_start"], hist["bin_end"])]
    trace = {"type": "bar", "x": labels, "y": hist["customers"].tolist(),
             "hovertemplate": "%{x}: %{y:,}<extra></extra>", "marker": {"color": _COLOURS[0]}}
    layout = _layout(w("ltv_distribution"), w("ltv_axis", days=days), w("customers_axis"))
    layout["yaxis"]["tickformat"] = ",d"
    layout["xaxis"]["tickangle"] = -45
    return {"data": [trace], "layout": layout}


def _cohort_heatmap(cohorts: pd.DataFrame, w: _Words) -> dict[str, Any]:
    table = cohorts.assign(percent=cohorts["customers"] / cohorts["cohort_size"] * 100,
                           month=pd.to_datetime(cohorts["cohort"]).dt.strftime("%Y-%m"))
    grid = table.pivot(index="month", columns="since", values="percent").sort_index()
    grid = grid.reindex(columns=range(int(grid.columns.max()) + 1 if len(grid.columns) else 1))
    later = grid.drop(columns=[0], errors="ignore").to_numpy(dtype=float)
    top = float(np.nanmax(later)) if np.isfinite(later).any() else 100.0
    z = [[None if not np.isfinite(v) else round(float(v), 1) for v in row] for row in grid.to_numpy(dtype=float)]
    trace = {"type": "heatmap", "z": z, "x": [int(c) for c in grid.columns], "y": list(grid.index),
             "zmin": 0, "zmax": max(top, 1.0), "colorscale": _SEQUENTIAL, "texttemplate": "%{z:.0f}",
             "textfont": {"size": 9}, "colorbar": {"title": {"text": w("cohort_colour")}},
             "hovertemplate": "%{y} +%{x}: %{z:.1f}%<extra></extra>", "hoverongaps": False}
    layout = _layout(w("cohort_heatmap"), w("cohort_x"), w("cohort_y"))
    layout["height"] = max(_CHART_HEIGHT, 22 * len(grid) + 140)
    layout["xaxis"].update({"dtick": 1, "side": "bottom"})
    layout["yaxis"].update({"autorange": "reversed", "type": "category"})
    return {"data": [trace], "layout": layout}


def _cluster_sizes(counts: pd.DataFrame, descriptions: dict[int, str], w: _Words) -> dict[str, Any]:
    total = max(int(counts["customers"].sum()), 1)
    names = [w("cluster_label", n=int(c)) for c in counts["cluster"]]
    shares = (counts["customers"] / total).tolist()
    trace = {"type": "bar", "orientation": "h", "y": names, "x": counts["customers"].tolist(),
             "customdata": [[s, descriptions[int(c)]] for s, c in zip(shares, counts["cluster"])],
             "text": [f"{s:.1%}" for s in shares], "textposition": "outside",
             "hovertemplate": "%{y}: %{x:,} (%{customdata[0]:.1%})<br>%{customdata[1]}<extra></extra>",
             "marker": {"color": _COLOURS[: len(counts)]}}
    layout = _layout(w("cluster_sizes"), w("customers_axis"), w("cluster_axis"))
    layout["yaxis"]["autorange"] = "reversed"
    layout["xaxis"].update({"tickformat": ",d", "range": [0, float(counts["customers"].max()) * 1.15 + 1]})
    return {"data": [trace], "layout": layout}


def _cluster_profile(model: Any, w: _Words) -> dict[str, Any]:
    z = [[round(float(model.profile.loc[c, f"z_{f}"]), 2) for f in model.features] for c in model.profile.index]
    trace = {"type": "heatmap", "z": z, "x": [w(f"feature_{f}") for f in model.features],
             "y": [w("cluster_label", n=int(c)) for c in model.profile.index], "zmid": 0, "colorscale": "RdBu",
             "reversescale": True, "texttemplate": "%{z:+.1f}", "zmin": -2, "zmax": 2,
             "colorbar": {"title": {"text": w("cluster_colour"), "side": "right"}},
             "hovertemplate": "%{y}, %{x}: %{z:+.2f}<extra></extra>"}
    layout = _layout(w("cluster_profile"), w("cluster_feature_axis"), w("cluster_axis"))
    layout["yaxis"]["autorange"] = "reversed"
    return {"data": [trace], "layout": layout}


def _model_curves(curves: dict[str, Any], target: str, w: _Words) -> list[tuple[str, dict[str, Any], str]]:
    entry = curves[target]
    name = w(f"target_{target}", days=entry["horizon_days"])
    calibration, gain = [], []
    for model, curve in entry["models"].items():
        label = w(f"model_{model}") if f"model_{model}" in TEXT else model
        bins = curve["calibration"]
        calibration.append({"type": "scatter", "mode": "lines+markers", "name": label,
                            "x": [round(v * 100, 2) for v in bins["mean_predicted"]],
                            "y": [round(v * 100, 2) for v in bins["positive_rate"]],
                            "customdata": bins["customers"],
                            "hovertemplate": "%{x:.1f}% → %{y:.1f}% (%{customdata:,})<extra>" + label + "</extra>"})
        points = curve["gain"]
        gain.append({"type": "scatter", "mode": "lines", "name": label,
                     "x": [round(v * 100, 2) for v in points["targeted_share"]],
                     "y": [round(v * 100, 2) for v in points["captured_share"]],
                     "hovertemplate": "%{x:.0f}% → %{y:.1f}%<extra>" + label + "</extra>"})
    diagonal = {"type": "scatter", "mode": "lines", "x": [0, 100], "y": [0, 100],
                "line": {"dash": "dash", "color": "#888888"}, "hoverinfo": "skip"}
    charts = []
    for key, traces, line in (("calibration", calibration, "perfect"), ("gain", gain, "random")):
        y_title = w("calibration_y") if key == "calibration" else w(f"gain_y_{target}")
        layout = _layout(w(key, target=name, cutoff=entry["cutoff"]), w(f"{key}_x"), y_title)
        for axis in ("xaxis", "yaxis"):
            layout[axis].update({"range": [0, 100], "ticksuffix": "%"})
        charts.append((f"{key}_{target}", {"data": [*traces, {**diagonal, "name": w(line)}], "layout": layout},
                       w(f"{key}_read")))
    return charts


# ---------------------------------------------------------------------------------------------
# HTML


_STYLE = """
:root { --ink: #1f2933; --muted: #5f6b7a; --line: #d9dee4; --accent: #2f6690; --bg: #f6f7f9; }
* { box-sizing: border-box; }
body { margin: 0; font-family: FONT; color: var(--ink); background: var(--bg); line-height: 1.45; }
header { background: var(--accent); color: white; padding: 20px 32px; }
header h1 { margin: 0 0 4px; font-size: 26px; }
header p { margin: 0; opacity: 0.9; }
nav { margin-top: 10px; font-size: 14px; }
nav a { color: white; margin-right: 16px; }
main { max-width: 1280px; margin: 0 auto; padding: 8px 24px 32px; }
section { background: white; border: 1px solid var(--line); border-radius: 8px; margin: 20px 0; padding: 16px 20px; }
section h2 { margin: 0 0 8px; font-size: 20px; }
section h3 { margin: 16px 0 6px; font-size: 16px; }
p.note { color: var(--muted); font-size: 13px; margin: 4px 0 10px; }
.kpis { display: grid; grid-template-columns: repeat(auto-fill, minmax(200px, 1fr)); gap: 12px; }
.kpi { border: 1px solid var(--line); border-radius: 6px; padding: 10px 12px; }
.kpi .label { font-size: 13px; color: var(--muted); }
.kpi .value { font-size: 24px; font-weight: 600; margin: 2px 0; }
.kpi .note { font-size: 12px; color: var(--muted); }
.grid2 { display: grid; grid-template-columns: repeat(auto-fit, minmax(520px, 1fr)); gap: 12px; }
.chart { width: 100%; min-height: 380px; }
table { border-collapse: collapse; width: 100%; font-size: 13px; margin: 8px 0; }
th, td { border-bottom: 1px solid var(--line); padding: 5px 8px; text-align: left; vertical-align: top; }
th { background: #eef1f4; font-weight: 600; }
td.num, th.num { text-align: right; white-space: nowrap; }
footer { color: var(--muted); font-size: 12px; text-align: center; padding: 12px; }
"""

_DRAW = """
document.querySelectorAll("div.chart").forEach(function (div) {
  var figure = JSON.parse(document.getElementById(div.id + "-figure").textContent);
  Plotly.newPlot(div, figure.data, figure.layout, {displaylogo: false, displayModeBar: false, responsive: true});
});
"""


class _Page:
    """Collects the page's sections and charts."""

    def __init__(self, w: _Words) -> None:
        self.w, self.parts, self.charts = w, [], 0

    def chart(self, name: str, figure: dict[str, Any]) -> str:
        self.charts += 1
        element = f"chart-{self.charts}"
        payload = json.dumps(figure, ensure_ascii=False, allow_nan=False, default=_json_default).replace("</", "<\\/")
        return (f'<div class="chart" id="{element}" data-chart="{html.escape(name)}"></div>\n'
                f'<script type="application/json" id="{element}-figure">{payload}</script>')

    def section(self, key: str, title: str, body: str) -> None:
        self.parts.append(f'<section id="{key}" data-section="{key}">\n<h2>{html.escape(title)}</h2>\n{body}\n</section>')


def _json_default(value: Any) -> Any:
    if isinstance(value, (np.integer,)):
        return int(value)
    if isinstance(value, (np.floating,)):
        return float(value) if np.isfinite(value) else None
    raise TypeError(f"{type(value).__name__} is not JSON")


def _table(headers: list[tuple[str, bool]], rows: list[list[str]]) -> str:
    """An HTML table; `headers` are (text, numeric?); cell texts are escaped here."""
    head = "".join(f'<th{" class=num" if num else ""}>{html.escape(h)}</th>' for h, num in headers)
    body = "".join("<tr>" + "".join(f'<td{" class=num" if num else ""}>{html.escape(c)}</td>'
                                    for c, (_, num) in zip(row, headers)) + "</tr>" for row in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _note(text: str) -> str:
    return f'<p class="note">{html.escape(text)}</p>' if text else ""


def _kpis(data: Any, frame: pd.DataFrame, w: _Words) -> str:
    k = data.kpis
    top = frame.iloc[0] if len(frame) else None
    cards = [
        (w("kpi_customers"), _number(k["customers"]), w("kpi_customers_note", registered=_number(k["registered"]))),
        (w("kpi_active"), _number(k["active"]),
         w("kpi_active_note", share=_percent(k["active"] / k["customers"] if k["customers"] else np.nan))),
        (w("kpi_repurchase"), _percent(k["repurchase_rate"]), w("kpi_repurchase_note")),
        (w("kpi_retention"), _percent(k["monthly_retention"]), w("kpi_retention_note")),
        (w("kpi_revenue"), _number(k["revenue"]), w("kpi_revenue_note")),
        (w("kpi_contribution"), _percent(top["revenue_share"]) if top is not None else "-",
         w("kpi_contribution_note", segment=w.segment(top["rfm_segment"]), share=_percent(top["revenue_share"]))
         if top is not None else ""),
        (w("kpi_ltv_total"), _number(k["ltv_total"]), w("kpi_ltv_total_note", days=data.ltv_days)),
        (w("kpi_ltv_mean"), _number(k["ltv_mean"], 2), w("kpi_ltv_mean_note")),
        (w("kpi_var"), _number(k["value_at_risk"]), w("kpi_var_note")),
    ]
    return '<div class="kpis">' + "".join(
        f'<div class="kpi"><div class="label">{html.escape(a)}</div><div class="value">{html.escape(b)}</div>'
        f'<div class="note">{html.escape(c)}</div></div>' for a, b, c in cards) + "</div>"


def _segments_body(page: _Page, frame: pd.DataFrame, w: _Words) -> str:
    rows = [[w.segment(r.rfm_segment), _number(r.customers), _percent(r.share), _number(r.revenue),
             _percent(r.revenue_share), _percent(r.mean_churn_risk), _number(r.ltv), w.action(r.rfm_segment)]
            for r in frame.itertuples(index=False)]
    headers = [(w("col_segment"), False), (w("col_customers"), True), (w("col_share"), True), (w("col_revenue"), True),
               (w("col_revenue_share"), True), (w("col_mean_churn"), True), (w("col_ltv"), True),
               (w("col_action"), False)]
    return (_note(w("segments_intro")) + '<div class="grid2">' + page.chart("segment_map", _segment_map(frame, w))
            + page.chart("segment_contribution", _segment_contribution(frame, w)) + "</div>" + _table(headers, rows))


def _lifecycle_body(page: _Page, data: Any, config: Config, w: _Words) -> str:
    note = w("funnel_note") + ("" if data.stages.get("registered") else w("funnel_no_registered"))
    return (page.chart("lifecycle_funnel", _funnel(data.stages, int(data.kpis["customers"]), w)) + _note(note)
            + '<div class="grid2">'
            + page.chart("churn_distribution", _churn_distribution(data.churn_histogram, config.horizons.churn_days, w))
            + page.chart("ltv_distribution", _ltv_distribution(data.ltv_histogram, data.ltv_days, w))
            + "</div>" + _note(w("ltv_note")))


def _at_risk_body(data: Any, w: _Words) -> str:
    rows = []
    for r in data.top_at_risk.to_dict("records"):
        flags = ", ".join(name for name in data.scenario_columns if r.get(name) is True)
        rows.append([_text(r["customer_id"]), w.segment(r["rfm_segment"]) if r["rfm_segment"] else "",
                     w.stage(r["lifecycle_stage"]), w.tier(r["churn_tier"]), w.tier(r["value_tier"]),
                     _percent(r["churn_risk"]), _number(r["ltv"], 2), _number(r["value_at_risk"], 2), flags,
                     _text(r["reasons"])])
    headers = [(w("col_customer"), False), (w("col_segment"), False), (w("col_stage"), False),
               (w("col_churn_tier"), False), (w("col_value_tier"), False), (w("col_churn_risk"), True),
               (w("col_ltv"), True), (w("col_var"), True), (w("col_tags"), False), (w("col_reasons"), False)]
    return _note(w("var_intro")) + _table(headers, rows) + _note(w("reasons_note"))


def _clusters_body(page: _Page, data: Any, config: Config, w: _Words) -> str:
    model = data.clusters
    if model is None:
        return _note(w("clusters_none", why=data.cluster_note))
    descriptions = model.descriptions(w.lang)
    low, high = config.report.clusters_k
    intro = w("clusters_intro", features=("、" if w.zh else ", ").join(w(f"feature_{f}") for f in model.features),
              k=model.k, silhouette=f"{model.silhouettes[model.k]:.2f}", low=low, high=high,
              sample=_number(model.sample_size))
    counts = data.cluster_counts
    total, revenue = max(int(counts["customers"].sum()), 1), counts["revenue"].sum()
    rows = [[w("cluster_label", n=int(r.cluster)), _number(r.customers), _percent(r.customers / total),
             _percent(r.revenue / revenue if revenue else np.nan), descriptions[int(r.cluster)]]
            for r in counts.itertuples(index=False)]
    headers = [(w("col_cluster"), False), (w("col_customers"), True), (w("col_share"), True),
               (w("col_revenue_share"), True), (w("col_description"), False)]
    return (_note(intro) + (_note(data.cluster_note) if data.cluster_note else "")
            + page.chart("cluster_sizes", _cluster_sizes(counts, descriptions, w)) + _table(headers, rows)
            + page.chart("cluster_profile", _cluster_profile(model, w)))


def _metric_cell(value: float | None) -> str:
    return "" if value is None or not np.isfinite(value) else f"{value:.3f}"


def _model_body(page: _Page, data: Any, config: Config, w: _Words) -> str:
    model = data.model
    horizons = {"churn": config.horizons.churn_days, "repurchase": config.horizons.repurchase_days,
                "ltv": config.horizons.ltv_days, **model.horizons}
    parts = [_note(w("model_intro", version=model.version, trained=model.trained_as_of or "-",
                     score=_metric_cell(model.validation_score) or "-"))]
    if model.metrics:
        parts.append(f"<h3>{html.escape(w('metrics_table'))}</h3>")
        for target, table in model.metrics.items():
            if not table:
                continue
            keys = list(dict.fromkeys(k for values in table.values() for k in values))
            days = horizons.get(target, "")
            headers = [(w("col_model"), False), *((w(f"metric_{k}"), True) for k in keys)]
            rows = [[w(f"model_{m}") if f"model_{m}" in TEXT else m, *(_metric_cell(v.get(k)) for k in keys)]
                    for m, v in table.items()]
            parts.append(f"<h3>{html.escape(w(f'target_{target}', days=days))}</h3>" + _table(headers, rows))
        parts.append(_note(w("metrics_read")))
    for target in model.curves:
        charts = _model_curves(model.curves, target, w)
        parts.append('<div class="grid2">' + "".join(
            "<div>" + page.chart(name, figure) + _note(read) + "</div>" for name, figure, read in charts) + "</div>")
    if model.missing:
        parts.append(_note(w("model_missing", why=model.missing)))
    return "\n".join(parts)


def render(data: Any, config: Config, lang: str = "en", tags_name: str = "") -> str:
    """The whole page for `data` (serving.report.ReportData) in `lang` ("en" or "zh")."""
    import plotly
    from plotly.offline import get_plotlyjs

    w = _Words(lang, config)
    page = _Page(w)
    frame = _segment_frame(data)
    page.section("kpis", w("kpis"), _kpis(data, frame, w))
    page.section("segments", w("segments"), _segments_body(page, frame, w))
    page.section("lifecycle", w("lifecycle"), _lifecycle_body(page, data, config, w))
    page.section("value-at-risk", w("value_at_risk"), _at_risk_body(data, w))
    cohorts = page.chart("cohort_retention", _cohort_heatmap(data.cohorts, w)) if len(data.cohorts) else ""
    page.section("cohorts", w("cohorts"), cohorts + _note(w("cohort_note", months=24)))
    page.section("clusters", w("clusters"), _clusters_body(page, data, config, w))
    page.section("model", w("model"), _model_body(page, data, config, w))
    made = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    subtitle = w("subtitle", customers=_number(data.kpis["customers"]), as_of=data.as_of.date(),
                 version=data.model.version, made=made)
    nav = "".join(f'<a href="#{key}">{html.escape(w(title))}</a>' for key, title in zip(
        SECTIONS, ("kpis", "segments", "lifecycle", "value_at_risk", "cohorts", "clusters", "model")))
    return f"""<!DOCTYPE html>
<html lang="{'zh-CN' if w.zh else 'en'}">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="generator" content="lifetag report (plotly.js {html.escape(plotly.__version__)} embedded)">
<title>{html.escape(w('title'))}</title>
<style>{_STYLE.replace('FONT', _FONT)}</style>
<script>{get_plotlyjs()}</script>
</head>
<body>
<header>
<h1>{html.escape(w('title'))}</h1>
<p>{html.escape(subtitle)}</p>
<nav>{nav}</nav>
</header>
<main>
{chr(10).join(page.parts)}
{CAMPAIGN_MARKER}
</main>
<footer>{html.escape(w('footer', tags=tags_name or 'the tags'))}</footer>
<script>{_DRAW}</script>
</body>
</html>
"""
