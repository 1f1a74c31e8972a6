"""`lifetag report`: the insight page of a scoring run, rendered in headless Chromium.

One small generated shop with its customers table, trained once (trials=0) and registered as champion
in a temporary MLflow store, scored once; the report is written in English and in Chinese. The
English page is opened by Debian's `chromium` with the network blocked (host resolution and a proxy
to a closed port), and the DOM after its scripts ran must hold Plotly's drawn SVG for every chart.
`LIFETAG_DOCS_SCREENSHOT=1` also refreshes docs/report.png from this run.
"""
from __future__ import annotations

import os
import re
import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from mlflow import MlflowClient
from typer.testing import CliRunner

from configs.schema import Config, ConfigError, load_config
from serving.cli import app
from features.clusters import CLUSTER_DOCS, cluster_sample, fit_clusters
from serving.report import ReportError, ReportResult, write_report
from serving.report_page import CAMPAIGN_MARKER, SECTIONS, TEXT
from serving.scoring import score
from training.pipeline import TrainResult, fit_bundle
from training.tracking import record_training
from support import generated_shop, use_embedded_store

REPO = Path(__file__).resolve().parents[2]
CUSTOMERS = 1_600
SEED = 23
AS_OF = "2025-01-01"
CHROMIUM_SECONDS = 120


@pytest.fixture(scope="module")
def shop(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return generated_shop(tmp_path_factory, CUSTOMERS, SEED)


@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory, empty_store: Path) -> Path:
    folder = tmp_path_factory.mktemp("home")
    shutil.copyfile(empty_store, folder / "mlflow.db")
    return folder


@pytest.fixture(autouse=True)
def _store(home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    use_embedded_store(monkeypatch, home)


@pytest.fixture(scope="module")
def trained(shop: Path, home: Path, config: Config) -> TrainResult:
    """The shop trained at AS_OF and registered as version 1 (champion)."""
    with pytest.MonkeyPatch.context() as monkeypatch:
        use_embedded_store(monkeypatch, home)
        result = fit_bundle(shop / "orders.parquet", config, as_of=AS_OF, trials=0,
                            customers=shop / "customers.parquet")
        assert record_training(result, promote=False, trials=0).version == "1"
    return result


@pytest.fixture(scope="module")
def tags(trained: TrainResult, shop: Path, home: Path, config: Config, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The shop scored with the champion."""
    out = tmp_path_factory.mktemp("tags") / "tags.parquet"
    with pytest.MonkeyPatch.context() as monkeypatch:
        use_embedded_store(monkeypatch, home)
        score(shop / "orders.parquet", AS_OF, out, config, customers=shop / "customers.parquet")
    return out


@pytest.fixture(scope="module")
def reports(tags: Path, shop: Path, home: Path, config: Config,
            tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[ReportResult, str]]:
    """The report in English and in Chinese: its result and its text."""
    folder = tmp_path_factory.mktemp("report")
    written = {}
    with pytest.MonkeyPatch.context() as monkeypatch:
        use_embedded_store(monkeypatch, home)
        for lang in ("en", "zh"):
            result = write_report(tags, shop / "orders.parquet", folder / f"report.{lang}.html", config,
                                  customers=shop / "customers.parquet", lang=lang)
            written[lang] = (result, result.out.read_text(encoding="utf-8"))
    return written


# ---------------------------------------------------------------------------------------------
# Chromium


def _chromium() -> str:
    """Debian's chromium, installed by .ci/install-chromium when missing; skip only when that cannot be done."""
    def found() -> str | None:
        return next((shutil.which(b) for b in ("chromium", "chromium-browser") if shutil.which(b)), None)

    if found() is None:
        subprocess.run(["bash", str(REPO / ".ci" / "install-chromium")], check=False, timeout=900)
    browser = found()
    if browser is None:
        pytest.skip("no Chromium: `chromium` is not on PATH and .ci/install-chromium could not install it "
                    "(needs apt-get and root or password-less sudo)")
    return browser


# Network off: every host name resolves to nothing and any proxied request goes to a closed port.
OFFLINE = ["--host-resolver-rules=MAP * ~NOTFOUND", "--proxy-server=http://127.0.0.1:9", "--proxy-bypass-list=<-loopback>"]


def _chromium_run(page: Path, *flags: str) -> str:
    browser = _chromium()
    profile = page.parent / f"chromium-profile-{len(flags)}"
    done = subprocess.run(
        [browser, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-extensions",
         f"--user-data-dir={profile}", "--virtual-time-budget=30000", *OFFLINE, *flags, page.resolve().as_uri()],
        capture_output=True, text=True, timeout=CHROMIUM_SECONDS)
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout


@pytest.fixture(scope="module")
def dom(reports: dict[str, tuple[ReportResult, str]]) -> str:
    """The English page's DOM after its scripts ran, with the network blocked."""
    return _chromium_run(reports["en"][0].out, "--dump-dom")


class _Charts(HTMLParser):
    """Per `div.chart`: Plotly's `svg.main-svg` count and the drawn trace elements (bars, funnel and treemap
    shapes, lines, heatmap images) inside it."""

    DRAWN = ("path", "image", "rect")

    def __init__(self) -> None:
        super().__init__()
        self.stack: list[tuple[str, str]] = []  # (tag, class)
        self.charts: dict[str, dict[str, int]] = {}
        self.current: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        values = dict(attrs)
        classes = values.get("class") or ""
        if tag == "div" and "chart" in classes.split() and values.get("data-chart"):
            self.current.append(values["data-chart"])
            self.charts[values["data-chart"]] = {"svg": 0, "drawn": 0}
        if self.current:
            counts = self.charts[self.current[-1]]
            if tag == "svg" and "main-svg" in classes:
                counts["svg"] += 1
            inside_trace = any(re.search(r"\b(trace|point|slice|hm|funnel|bars)\b", c) for _, c in self.stack)
            if tag in self.DRAWN and inside_trace:
                counts["drawn"] += 1
        if tag not in ("path", "image", "rect", "br", "img", "meta", "input"):
            self.stack.append((tag, classes))

    def handle_endtag(self, tag: str) -> None:
        if tag in ("path", "image", "rect", "br", "img", "meta", "input"):
            return
        while self.stack:
            opened, classes = self.stack.pop()
            if opened == "div" and self.current and "chart" in classes.split():
                self.current.pop()
            if opened == tag:
                break


def _charts_in(text: str) -> dict[str, dict[str, int]]:
    parser = _Charts()
    parser.feed(text)
    return parser.charts


class _Links(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.links: list[str] = []
        self.tags: list[tuple[str, dict[str, str | None]]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, dict(attrs)))
        self.links += [v for k, v in attrs if k in ("src", "href", "srcset", "data", "poster", "action") and v]


# ---------------------------------------------------------------------------------------------
# The page


def test_every_chart_is_drawn_in_headless_chromium_with_the_network_blocked(reports, dom: str) -> None:
    source = _charts_in(reports["en"][1])
    drawn = _charts_in(dom)
    assert len(source) >= 12, sorted(source)
    assert set(drawn) == set(source)
    for name, counts in drawn.items():
        assert counts["svg"] >= 1, f"{name}: Plotly drew no SVG"
        assert counts["drawn"] >= 1, f"{name}: no bar, line, tile or heatmap was drawn ({counts})"
    expected = {"segment_map", "segment_contribution", "lifecycle_funnel", "churn_distribution", "ltv_distribution",
                "cohort_retention", "cluster_sizes", "cluster_profile", "calibration_churn", "gain_churn",
                "calibration_repurchase", "gain_repurchase"}
    assert expected <= set(drawn)


def test_the_page_is_self_contained_with_plotly_js_embedded_once(reports) -> None:
    result, text = reports["en"]
    parser = _Links()
    parser.feed(text)
    assert not [link for link in parser.links if re.match(r"\s*(https?:)?//", link)], "nothing may load from the network"
    assert not [attrs for tag, attrs in parser.tags if tag == "script" and attrs.get("src")]
    assert not [attrs for tag, attrs in parser.tags if tag == "link"]
    assert len(re.findall(r"\* plotly\.js v\d", text)) == 1, "plotly.js is embedded exactly once"
    assert text.count("Plotly.newPlot") == 1, "one script draws every chart"
    assert result.size_bytes < 15e6


def test_sections_are_in_order_and_main_ends_with_the_campaign_marker(reports) -> None:
    text = reports["en"][1]
    positions = [text.index(f'<section id="{key}" data-section="{key}">') for key in SECTIONS]
    assert positions == sorted(positions)
    assert re.search(re.escape(CAMPAIGN_MARKER) + r"\s*</main>", text)
    assert text.count("<main>") == 1
    for heading in ("Key figures", "RFM segments", "Lifecycle and risk", "Largest values at risk", "Cohort retention",
                    "Behavioural clusters", "Model"):
        assert f"<h2>{heading}</h2>" in text


def test_kpis_are_those_of_the_tags(reports, tags: Path) -> None:
    result, text = reports["en"]
    frame = pd.read_parquet(tags)
    assert result.customers == len(frame)
    buyers = frame[frame["frequency"] > 0]
    assert f"{(buyers['frequency'] >= 2).mean():.1%}" in text  # repurchase rate
    assert f"{frame['value_at_risk'].sum():,.0f}" in text
    assert f"{frame['ltv'].sum():,.0f}" in text
    top = frame.sort_values(["value_at_risk", "customer_id"], ascending=[False, True]).iloc[0]
    assert f"<td>{top['customer_id']}</td>" in text


def test_chinese_page_has_every_heading_label_and_segment_name_in_chinese(reports, config: Config) -> None:
    text = reports["zh"][1]
    assert '<html lang="zh-CN">' in text
    headings = re.findall(r"<h[123]>([^<]*)</h[123]>", text)
    assert headings and all(re.search(r"[\u4e00-\u9fff]", h) for h in headings), headings
    english = {TEXT[k][0] for k in ("kpis", "segments", "cohorts", "clusters", "churn_axis", "cohort_x", "gain_x")}
    assert not [e for e in english if e.split("{")[0] in text]
    for key, info in config.rfm.segments.items():
        if f'"{key}"' in text or info.label_zh in text:
            assert info.label not in text.replace(info.label_zh, ""), f"{key} is named in English"
    assert "重要价值客户" in text and "距首单月数" in text and "建议动作" in text
    assert "VIP 关怀" in text  # the segment actions in Chinese


def test_the_model_section_shows_the_champion_against_the_baselines(reports) -> None:
    text = reports["en"][1]
    model = text[text.index('<section id="model"'):]
    for words in ("lifetag model", "recency heuristic (baseline)", "BG/NBD (baseline)", "run rate (baseline)",
                  "ROC AUC", "normalised Gini", "How to read"):
        assert words in model
    assert "Not shown" not in model


def test_the_report_is_logged_to_the_scoring_versions_run(reports) -> None:
    result = reports["en"][0]
    run_id = MlflowClient().get_model_version("lifetag", "1").run_id
    assert result.logged == f"runs:/{run_id}/report/report.en.html"
    names = {Path(a.path).name for a in MlflowClient().list_artifacts(run_id, "report")}
    assert {"report.en.html", "report.zh.html"} <= names


def test_screenshot_of_the_page(reports, tmp_path: Path) -> None:
    from PIL import Image

    shot = tmp_path / "report.png"
    _chromium_run(reports["en"][0].out, "--hide-scrollbars", "--window-size=1280,1500", f"--screenshot={shot}")
    image = Image.open(shot).convert("RGB")
    assert image.size == (1280, 1500)
    assert len(image.getcolors(maxcolors=1 << 20) or []) > 50, "the screenshot is blank"
    if os.environ.get("LIFETAG_DOCS_SCREENSHOT"):
        image.resize((960, 1125), Image.LANCZOS).quantize(colors=128).save(REPO / "docs" / "report.png", optimize=True)
    docs = REPO / "docs" / "report.png"
    assert docs.exists() and docs.stat().st_size < 400_000
    assert "docs/report.png" in (REPO / "README.md").read_text(encoding="utf-8")


# ---------------------------------------------------------------------------------------------
# Clusters


def test_score_clusters_are_the_reports_clusters(tags: Path, shop: Path, config: Config, tmp_path: Path,
                                                 reports) -> None:
    out = tmp_path / "tags.parquet"
    score(shop / "orders.parquet", AS_OF, out, config, customers=shop / "customers.parquet", clusters=True,
          partitions=2)
    clustered = pd.read_parquet(out)
    plain = pd.read_parquet(tags)
    pd.testing.assert_frame_equal(clustered.drop(columns=["cluster", "cluster_description"]), plain)
    buyers = clustered[clustered["frequency"] > 0]
    assert buyers["cluster"].notna().all() and clustered.loc[clustered["frequency"] == 0, "cluster"].isna().all()
    text = reports["en"][1]
    for number, group in buyers.groupby("cluster"):
        description = group["cluster_description"].iloc[0]
        assert group["cluster_description"].nunique() == 1
        assert re.search(rf"<td>cluster {int(number)}</td><td class=num>{len(group):,}</td>", text), number
        assert description in text


def test_clusters_are_learned_with_the_model_and_stored_with_it(trained: TrainResult, tags: Path, shop: Path,
                                                               config: Config, tmp_path: Path) -> None:
    from features.clusters import ClusterModel
    from serving.bundle import Bundle, BundleError

    folder = trained.bundle.save(tmp_path / "bundle")
    loaded = Bundle.load(folder).cluster_model()
    assert isinstance(loaded, ClusterModel) and loaded.k == trained.bundle.cluster_model().k
    features = _behaviour([{"recency_days": 10, "frequency": 9, "monetary_mean": 30, "gap_median_days": 20},
                           {"recency_days": 300, "frequency": 1, "monetary_mean": 80, "gap_median_days": 0}], 40)
    for column in loaded.features:
        if column not in features:
            features[column] = 0.3
    assert (loaded.assign(features) == trained.bundle.cluster_model().assign(features)).all()
    assert loaded.descriptions() == trained.bundle.cluster_model().descriptions()
    # A model without them (an older lifetag): score --clusters says to retrain, nothing is re-learned.
    (folder / "clusters.json").unlink()
    with pytest.raises(BundleError, match="no behavioural clusters.*Retrain"):
        score(shop / "orders.parquet", AS_OF, tmp_path / "out.parquet", config, model_uri=str(folder), clusters=True,
              customers=shop / "customers.parquet")


def _behaviour(rows: list[dict[str, float]], n: int, seed: int = 5) -> pd.DataFrame:
    """`n` customers like each row, every value jittered by up to 5%."""
    rng = np.random.default_rng(seed)
    frame = pd.concat([pd.DataFrame({k: v * rng.uniform(0.95, 1.05, n) for k, v in row.items()}) for row in rows],
                      ignore_index=True)
    frame.insert(0, "customer_id", [f"c{i:05d}" for i in range(len(frame))])
    return frame


def test_clusters_are_described_by_how_they_differ_from_everyone() -> None:
    config = load_config(overrides={"report": {"clusters_k": [2, 4]}})
    everyone = {"recency_days": 40, "frequency": 6, "discount_share": 0.1, "distinct_categories": 2,
                "return_rate": 0.02, "novdec_share": 0.15, "monetary_total": 500}
    regular = {**everyone, "gap_median_days": 21, "monetary_mean": 12, "weekend_share": 0.9}
    rare = {**everyone, "gap_median_days": 120, "monetary_mean": 400, "weekend_share": 0.05}
    model = fit_clusters(_behaviour([regular, rare], 150), config)
    assert model.k == 2 and set(model.silhouettes) == {2, 3, 4}
    first = int(model.assign(_behaviour([regular], 1, seed=9))[0])
    words = model.describe(first, "en")
    assert set(words.split(", ")) == {"buy every 3 weeks", "small baskets (mean order 12)",
                                      "mostly weekends (90% of orders)"}, words
    assert "周末" in model.describe(first, "zh") and "每 3 周购买一次" in model.describe(first, "zh")


def test_the_cluster_columns_are_documented_with_the_tags() -> None:
    docs = (REPO / "docs" / "tags.md").read_text(encoding="utf-8")
    for name, (meaning, unit) in CLUSTER_DOCS.items():
        assert f"| `{name}` | {meaning} | {unit} |" in docs, name


def test_cluster_sample_is_a_fixed_sample_of_buyers(shop: Path, config: Config) -> None:
    from features.engine import connect
    from features.intake import open_sources

    small = load_config(overrides={"report": {"cluster_sample": 300}})
    samples = []
    for _ in range(2):
        con = connect(small.engine)
        open_sources(con, shop / "orders.parquet", small)
        samples.append(cluster_sample(con, "orders", AS_OF, small))
        con.close()
    assert len(samples[0]) == 300
    pd.testing.assert_frame_equal(samples[0], samples[1])


def test_clusters_k_must_be_a_range() -> None:
    with pytest.raises(ConfigError, match=r"report.clusters_k.*\[min, max\]"):
        load_config(overrides={"report": {"clusters_k": [6, 3]}})


# ---------------------------------------------------------------------------------------------
# The command


def _report(*args: str):  # noqa: ANN202 - click's Result
    return CliRunner().invoke(app, ["report", *args])


def test_report_command_writes_the_page_and_says_where(tags: Path, shop: Path, tmp_path: Path) -> None:
    out = tmp_path / "nested" / "insight.html"
    done = _report("--tags", str(tags), "--orders", str(shop / "orders.parquet"), "--customers",
                   str(shop / "customers.parquet"), "--out", str(out), "--model", "models:/lifetag@champion")
    assert done.exit_code == 0, done.output
    assert f"-> {out}" in done.output and "logged to MLflow as runs:/" in done.output
    assert out.exists() and not list(out.parent.glob(".*.tmp"))


@pytest.mark.parametrize("out, message", [
    ("orders.parquet", "is the same file as --orders"),
    ("tags.parquet", "is the same file as --tags"),
    ("report.txt", "give it a .html name"),
])
def test_report_refuses_an_output_that_is_an_input_or_not_html(tags: Path, shop: Path, out: str, message: str) -> None:
    target = {"orders.parquet": shop / "orders.parquet", "tags.parquet": tags}.get(out, shop.parent / out)
    before = target.read_bytes() if target.exists() else None
    done = _report("--tags", str(tags), "--orders", str(shop / "orders.parquet"), "--out", str(target))
    assert done.exit_code == 2 and message in done.output, done.output
    assert "Traceback" not in done.output
    assert (target.read_bytes() if target.exists() else None) == before


def test_a_failed_report_leaves_the_earlier_file_as_it_was(tags: Path, shop: Path, tmp_path: Path) -> None:
    out = tmp_path / "report.html"
    out.write_text("yesterday's report")
    done = _report("--tags", str(tags), "--orders", str(shop / "orders.parquet"), "--out", str(out),
                   "--model", "models:/lifetag/7", "--lang", "en")
    assert done.exit_code == 2, done.output
    assert "the tags were scored with model version 1" in done.output
    assert out.read_text() == "yesterday's report" and not list(tmp_path.glob(".*.tmp"))
    wrong = _report("--tags", str(tags), "--orders", str(shop / "orders.parquet"), "--out", str(out), "--lang", "fr")
    assert wrong.exit_code == 2 and "--lang 'fr'" in wrong.output


def test_tags_scored_with_a_bundle_folder_are_reported_but_not_logged(trained: TrainResult, shop: Path,
                                                                     config: Config, tmp_path: Path) -> None:
    folder = trained.bundle.save(tmp_path / "nightly-bundle")
    tags = tmp_path / "tags.parquet"
    score(shop / "orders.parquet", AS_OF, tags, config, model_uri=str(folder), customers=shop / "customers.parquet")
    out = tmp_path / "report.html"
    done = _report("--tags", str(tags), "--orders", str(shop / "orders.parquet"), "--out", str(out),
                   "--model", str(folder))
    assert done.exit_code == 0, done.output
    assert "not logged to MLflow: the model is a bundle folder" in done.output
    model = out.read_text(encoding="utf-8").split('<section id="model"')[1]
    assert "bundle:nightly-bundle" in model and "Not shown" in model and "calibration_churn" not in model
    wrong = _report("--tags", str(tags), "--orders", str(shop / "orders.parquet"), "--out", str(out),
                    "--model", str(tmp_path / "no-such-folder"))
    assert wrong.exit_code == 2 and "no such bundle folder" in wrong.output


def test_tags_that_are_not_a_score_output_are_refused(shop: Path, tmp_path: Path, config: Config) -> None:
    with pytest.raises(ReportError, match="not a `lifetag score` output"):
        write_report(shop / "orders.parquet", shop / "orders.parquet", tmp_path / "r.html", config)
