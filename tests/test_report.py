"""The HTML report: one self-contained page with every section and the numbers of the tables.

References: the numbers in the page must be those of ``Results.oc()`` / ``summary()`` /
``paired()`` (computed independently by oc.py); "self-contained" is checked literally (no
http(s) references, no scripts, every image a decodable PNG data URI); the browser test asks
headless Chromium to load the page and checks the DOM it builds and its console.
"""
import base64
import os
import re
import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import numpy as np  # noqa: E402
import pytest  # noqa: E402

import escalation_sim as es  # noqa: E402
from escalation_sim.engines.exact import exact_tally  # noqa: E402
from escalation_sim.report import SECTION_IDS, render_report, write_report  # noqa: E402
from escalation_sim.results.tables import DesignResult, Results  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]

# The seed trial's doses and a hypothetical truth, written out here (time-free) so the tests
# do not depend on later edits of scenarios/relma_cel_sle.yaml.
@pytest.fixture(scope="module")
def base_text(scenario_yaml, relma_doses):
    return scenario_yaml(
        name="relma-cel-sle", doses=relma_doses, n_trials=2000, seed=2026,
        description="Relma-cel CAR-T phase 1 in SLE (NCT05765006), four dose levels.")


@pytest.fixture(scope="module")
def base_file(tmp_path_factory, base_text):
    p = tmp_path_factory.mktemp("scen") / "relma.yaml"
    p.write_text(base_text)
    return p


class _Page(HTMLParser):
    """Collects ids, <img> sources, links and scripts of a page."""

    def __init__(self):
        super().__init__()
        self.ids, self.imgs, self.refs, self.scripts, self.sections = [], [], [], 0, []
        self.text = []

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if "id" in a:
            self.ids.append(a["id"])
        if tag == "section":
            self.sections.append(a.get("id"))
        if tag == "img":
            self.imgs.append(a.get("src", ""))
        if tag == "script":
            self.scripts += 1
        for k in ("src", "href", "action", "data", "poster"):
            if k in a and a[k] is not None:
                self.refs.append(a[k])

    def handle_data(self, data):
        self.text.append(data)


def parse(text):
    p = _Page()
    p.feed(text)
    return p


@pytest.fixture(scope="module")
def mc_results(base_file):
    return es.simulate(str(base_file), n_trials=1500, seed=11)


@pytest.fixture(scope="module")
def mc_html(mc_results, tmp_path_factory):
    path = write_report(mc_results, tmp_path_factory.mktemp("rep") / "report.html")
    return path, path.read_text(encoding="utf-8")


def section(html, sid):
    m = re.search(rf'<section id="{sid}">(.*?)</section>', html, re.S)
    assert m, f"section {sid} missing"
    return m.group(1)


def assert_self_contained(html):
    page = parse(html)
    assert page.scripts == 0
    # no reference leaves the page: only in-page anchors and data URIs
    for ref in page.refs:
        assert ref.startswith("#") or ref.startswith("data:image/png;base64,"), ref[:60]
    assert not re.search(r"""(src|href)\s*=\s*["']?\s*(https?:)?//""", html, re.I)
    assert "url(" not in html and "@import" not in html and "<link" not in html.lower()
    assert page.imgs
    for src in page.imgs:
        assert src.startswith("data:image/png;base64,")
        png = base64.b64decode(src.split(",", 1)[1], validate=True)
        assert png[:8] == b"\x89PNG\r\n\x1a\n"          # PNG signature (RFC 2083)
    return page


def test_report_is_self_contained_with_every_section(mc_html):
    path, html = mc_html
    assert path.suffix == ".html" and path.exists()
    page = assert_self_contained(html)
    assert page.sections == list(SECTION_IDS)
    # the navigation links to every section
    for sid in SECTION_IDS:
        assert f'href="#{sid}"' in html
    assert html.startswith("<!DOCTYPE html>") and '<meta charset="utf-8">' in html


def pc(v) -> str:
    """A probability as the report prints it: a percentage with one decimal."""
    return f"{100 * v:.1f}%"


def test_report_shows_the_oc_numbers_with_ses(mc_results, mc_html):
    _, html = mc_html
    oc_html = section(html, "operating-characteristics")
    oc = mc_results.oc()
    for _, row in oc.iterrows():
        assert f">{row['design']}<" in oc_html
        # probabilities as percentages (issue 18), the SE beside them
        assert f"{pc(row['pcs'])} <span class=\"se\">({pc(row['se_pcs'])})</span>" in oc_html
        assert pc(row['p_select_overdose']) in oc_html
        assert f"{row['mean_n_total']:.2f} <span class=\"se\">({row['se_mean_n_total']:.2f})" \
               in oc_html
        assert f"{row['mean_dlt_total']:.2f}" in oc_html
        assert f"{100 * row['pct_patients_at_mtd']:.1f}%" in oc_html
    # the at-a-glance sentence names the design with the highest PCS
    best = oc.loc[oc["pcs"].idxmax()]
    assert f"<b>{best['design']}</b> selects the true MTD most often" in oc_html


def test_report_per_dose_and_paired_numbers(mc_results, mc_html):
    _, html = mc_html
    per = section(html, "per-dose-summary")
    sm = mc_results.summary()
    for _, r in sm.iterrows():
        if r["p_select"] > 0.0005:   # 0.0% is shown without its SE
            assert f"{pc(r['p_select'])} <span class=\"se\">({pc(r['se_p_select'])})" in per
        assert f"{r['mean_n']:.2f} <span class=\"se\">({r['se_mean_n']:.2f})" in per
    paired = section(html, "paired-differences")
    pdf = mc_results.paired()
    assert len(re.findall(r"<tr>", paired)) == len(pdf) + 1       # + the header row
    r = pdf[(pdf.metric == "correct")].iloc[0]
    assert pc(r['mean_difference']) in paired
    lo = r["mean_difference"] - 1.96 * r["se"]
    assert f"[{pc(lo)}," in paired


def test_report_scenario_run_settings_and_versions(mc_results, mc_html):
    _, html = mc_html
    sc = section(html, "scenario")
    for label, amount, p in zip(["DL1", "DL2", "DL3", "DL4"], ["25", "50", "75", "100"],
                                [0.05, 0.10, 0.18, 0.28], strict=True):
        assert f">{label}<" in sc and f">{amount}×10⁶<" in sc and f">{p:.3f}<" in sc
    assert "CAR-T cells" in sc and "0.25" in sc and "24 patients" in sc
    assert "No <code>conduct</code> block" in sc
    run = section(html, "run-settings")
    assert ">1,500<" in run and ">11<" in run
    assert "--n-trials 1500 --seed 11" in run
    ver = section(html, "versions")
    for pkg in ("escalation-sim", "numpy", "matplotlib"):
        assert f">{pkg}<" in ver
    assert "Not simulated" in section(html, "durations")
    assert len(parse(section(html, "plots")).imgs) == 2


def test_report_escapes_text_from_the_scenario(scenario_yaml):
    text = scenario_yaml(description='"<script>alert(1)</script> & <b>bold</b>"')
    sc = es.load_scenario_text(text, "x.yaml")
    html = render_report(es.simulate(sc, n_trials=100))
    assert "<script>" not in html and "&lt;script&gt;alert(1)&lt;/script&gt; &amp;" in html


def test_report_from_exact_results(tmp_path, base_text):
    res = es.exact_oc(["3+3", "boin"], es.load_scenario_text(base_text))
    html = write_report(res, tmp_path / "exact.html").read_text()
    assert_self_contained(html)
    oc = section(html, "operating-characteristics")
    assert "Exact values" in oc and 'class="se"' not in oc    # no SEs for exact results
    for _, row in res.oc().iterrows():
        assert pc(row['pcs']) in oc
    assert "no paired sample" in section(html, "paired-differences")
    assert "exact enumeration" in section(html, "run-settings")


@pytest.fixture(scope="module")
def des_scenario(scenario_yaml, relma_doses):
    # 3+3 and BOIN only (keeps the test fast), with calendar-time logistics
    text = scenario_yaml(name="relma-cel-sle", doses=relma_doses, n_trials=2000, seed=2026,
                         designs=['{type: "3+3"}', "{type: boin}"],
                         extra="conduct: {accrual_per_month: 2, dropout_prob: 0.05}\n")
    return es.load_scenario_text(text, "relma_des.yaml")


def test_report_durations_section_with_logistics(tmp_path, des_scenario):
    # Results assembled by hand: exact tallies plus known durations, so the duration table
    # can be checked against numpy's mean / quantiles of the same arrays.
    sc = des_scenario
    rng = np.random.default_rng(7)
    durs = {"3+3": rng.gamma(9.0, 50.0, 1000), "boin": rng.gamma(12.0, 50.0, 1000)}
    drs = [DesignResult(it.name, it.type, exact_tally(it.design, sc.p_true),
                        durations=durs[it.name]) for it in sc.designs]
    res = Results(sc, drs, {}, 1000, 3, "monte-carlo", {"engine": "des"})
    html = write_report(res, tmp_path / "des.html", swimmer=False).read_text()
    assert_self_contained(html)
    dur = section(html, "durations")
    for name, d in durs.items():
        q10, q50, q90 = np.quantile(d, [0.1, 0.5, 0.9])
        se = d.std(ddof=1) / np.sqrt(d.size)
        assert f"{d.mean():.0f} <span class=\"se\">({se:.0f})</span>" in dur
        assert f">{q50:.0f}<" in dur and f">{q10:.0f}<" in dur and f">{q90:.0f}<" in dur
    assert len(parse(dur).imgs) == 1                         # swimmer plots off
    assert "One simulated trial" not in dur
    scen = section(html, "scenario")
    assert "2 arrivals per month" in scen and "manufacturing" in scen
    assert "mean duration (days)" in section(html, "operating-characteristics")


def test_report_end_to_end_with_the_discrete_event_engine(tmp_path, des_scenario):
    res = es.simulate(des_scenario, n_trials=100, seed=4)
    html = write_report(res, tmp_path / "des.html").read_text()
    assert_self_contained(html)
    dur = section(html, "durations")
    for d in res.designs:
        m = res.design_oc(d.name)["duration_days"]["mean"]
        assert f"{m:.0f} <span" in dur
    # one duration figure plus one swimmer plot (trial 0) per design
    assert len(parse(dur).imgs) == 1 + len(res.designs)
    assert "One simulated trial" in dur
    ex = es.swimmer_data(res.scenario, "3+3", trial=0, seed=4)
    # the swimmer plot shows trial 0 of the same simulation: same duration, bit for bit
    assert res.designs[0].name == "3+3"
    assert res.designs[0].durations[0] == ex["duration_days"]


def test_cli_report_end_to_end(tmp_path, capsys, base_file):
    from escalation_sim.cli import main
    out = tmp_path / "sub" / "r.html"
    rc = main(["report", str(base_file), "-o", str(out), "--n-trials", "200", "--seed", "9"])
    assert rc == 0 and out.exists()
    assert "report written to" in capsys.readouterr().out
    html = out.read_text()
    assert_self_contained(html)
    ref = es.simulate(str(base_file), n_trials=200, seed=9).oc()
    for _, row in ref.iterrows():     # same seed, same numbers
        assert f"{pc(row['pcs'])} <span" in section(html, "operating-characteristics")


# -- headless browser ---------------------------------------------------------------------------
def _chromium():
    if os.path.exists("/usr/bin/chromium"):
        return "/usr/bin/chromium"
    return shutil.which("chromium") or shutil.which("chromium-browser")


def test_report_renders_in_headless_chromium(mc_html, tmp_path):
    exe = _chromium()
    if exe is None:
        pytest.skip("chromium not installed: apt-get install chromium")
    path, _ = mc_html
    flags = [exe, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
             "--no-first-run", "--disable-background-networking",
             "--disable-component-update", "--disable-sync",
             f"--user-data-dir={tmp_path / 'profile'}", "--enable-logging=stderr", "--v=0"]
    url = path.resolve().as_uri()
    r = subprocess.run(flags + ["--dump-dom", url], capture_output=True, text=True,
                       timeout=120)
    assert r.returncode == 0, r.stderr[-2000:]
    dom = r.stdout
    page = parse(dom)
    assert page.sections == list(SECTION_IDS)
    assert len(page.imgs) >= 3 and all(s.startswith("data:image/png") for s in page.imgs)
    assert "Operating characteristics" in dom
    for bad in ("Uncaught", "console error", "ERR_FILE_NOT_FOUND", "net::ERR"):
        assert bad.lower() not in r.stderr.lower(), bad
    assert not re.search(r"CONSOLE\(\d+\)", r.stderr)   # the page logged nothing at all
    shot = tmp_path / "shot.png"
    r = subprocess.run(flags + ["--hide-scrollbars", "--window-size=1200,3000",
                                f"--screenshot={shot}", url],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0 and shot.exists()
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and shot.stat().st_size > 20_000


# -- saving results and reporting later ------------------------------------------------------
def test_parquet_round_trip_gives_the_same_tables_and_report(mc_results, tmp_path):
    import pandas as pd
    pytest.importorskip("pyarrow")
    p = mc_results.to_parquet(tmp_path / "res.parquet")
    back = Results.from_parquet(p)
    # reference: the tables of the original object, recomputed from the reloaded tallies
    pd.testing.assert_frame_equal(back.oc(), mc_results.oc())
    pd.testing.assert_frame_equal(back.summary(), mc_results.summary())
    pd.testing.assert_frame_equal(back.paired(), mc_results.paired())
    assert (back.seed, back.n_trials, back.method) == (11, 1500, "monte-carlo")
    from escalation_sim.report import _oc_section, _per_dose_section
    assert _oc_section(back) == _oc_section(mc_results)
    assert _per_dose_section(back) == _per_dose_section(mc_results)


def test_parquet_round_trip_keeps_durations_and_exact_weights(tmp_path, des_scenario):
    pytest.importorskip("pyarrow")
    sc = des_scenario
    rng = np.random.default_rng(2)
    drs = [DesignResult(it.name, it.type, exact_tally(it.design, sc.p_true),
                        durations=rng.gamma(9.0, 50.0, 100), des_totals={"mean_n_lost": 0.5})
           for it in sc.designs]
    res = Results(sc, drs, {}, 100, 3, "monte-carlo")
    back = Results.from_parquet(res.to_parquet(tmp_path / "d.parquet"))
    for d0, d1 in zip(res.designs, back.designs, strict=True):
        assert np.array_equal(d0.durations, d1.durations)       # bit for bit
        assert d1.des_totals == {"mean_n_lost": 0.5}
        assert d1.tally.exact and d1.tally.counts == d0.tally.counts   # float weights kept
    assert back.scenario.has_logistics
    assert back.design_oc("boin")["duration_days"] == res.design_oc("boin")["duration_days"]
    import pandas as pd
    pd.DataFrame({"a": [1]}).to_parquet(tmp_path / "x.parquet")   # some other Parquet file
    with pytest.raises(ValueError, match="not a file written"):
        Results.from_parquet(tmp_path / "x.parquet")


def test_read_tables_reads_back_what_write_wrote(mc_results, tmp_path):
    import pandas as pd
    mc_results.write(tmp_path / "out")
    t = Results.read_tables(tmp_path / "out")
    assert set(t) == {"oc", "summary", "paired"}
    # oc.csv = oc() plus the stop reasons with their SEs (issue 18)
    pd.testing.assert_frame_equal(t["oc"], mc_results.oc_file(), check_dtype=False)
    pd.testing.assert_frame_equal(t["summary"], mc_results.summary(), check_dtype=False)
    for f in (tmp_path / "out").glob("*.parquet"):
        f.unlink()                                                  # CSV only
    t = Results.read_tables(tmp_path / "out")
    # CSV numbers carry 12 significant digits (no float noise)
    pd.testing.assert_frame_equal(t["oc"], mc_results.oc_file(), check_dtype=False,
                                  rtol=1e-11)
    with pytest.raises(FileNotFoundError):
        Results.read_tables(tmp_path / "empty")
