"""The HTML report: valid, self-contained, escaped, and quoting the run's own numbers."""

import base64
import os
import re
from html.parser import HTMLParser

import pytest

pytest.importorskip("matplotlib")

from eosflow.analysis import format_value, write_report
from eosflow.experiments import RunDirError, load_run
from eosflow.runner import write_json

from .conftest import (
    GD_LR,
    GD_N,
    GD_ONSET,
    NGD_ONSET,
    SGD_CONFIG,
    SWEEP_ONSET,
    make_run,
    ngd_columns,
    sgd_columns,
)

VOID = {"area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "source",
        "track", "wbr"}
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


class Checker(HTMLParser):
    """Collects structure problems, tags, attributes, text and table rows."""

    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.stack: list[str] = []
        self.errors: list[str] = []
        self.counts: dict[str, int] = {}
        self.attrs: list[tuple[str, dict]] = []
        self.doctype = None
        self.text: list[str] = []
        self.rows: list[list[str]] = []  # cell texts of each <tr>
        self.row_keys: list[str | None] = []
        self._cell: list[str] | None = None

    def handle_decl(self, decl):
        self.doctype = decl

    def handle_starttag(self, tag, attrs):
        self.counts[tag] = self.counts.get(tag, 0) + 1
        self.attrs.append((tag, dict(attrs)))
        if tag == "tr":
            self.rows.append([])
            self.row_keys.append(dict(attrs).get("data-key"))
        if tag in ("td", "th"):
            self._cell = []
        if tag not in VOID:
            self.stack.append(tag)

    def handle_startendtag(self, tag, attrs):
        self.handle_starttag(tag, attrs)
        if tag not in VOID:
            self.stack.pop()

    def handle_endtag(self, tag):
        if tag in VOID:
            self.errors.append(f"end tag for void element {tag}")
            return
        if not self.stack or self.stack[-1] != tag:
            self.errors.append(f"</{tag}> closes <{self.stack[-1] if self.stack else None}>")
            return
        self.stack.pop()
        if tag in ("td", "th") and self._cell is not None:
            self.rows[-1].append("".join(self._cell).strip())
            self._cell = None

    def handle_data(self, data):
        self.text.append(data)
        if self._cell is not None:
            self._cell.append(data)


def parse(path) -> tuple[Checker, str]:
    raw = path.read_text(encoding="utf-8")
    p = Checker()
    p.feed(raw)
    p.close()
    return p, raw


def assert_valid(p: Checker) -> None:
    assert p.doctype is not None and p.doctype.lower() == "doctype html"
    assert not p.errors, p.errors
    assert not p.stack, f"unclosed: {p.stack}"
    for tag in ("html", "head", "body", "title"):
        assert p.counts.get(tag) == 1, tag


def headline_cells(p: Checker) -> dict[str, str]:
    """data-key -> the value cell of the headline table."""
    return {k: row[1] for k, row in zip(p.row_keys, p.rows, strict=True) if k and len(row) > 1}


def assert_self_contained(p: Checker, raw: str) -> None:
    for tag, attrs in p.attrs:
        for name in ("src", "href"):
            if name in attrs:
                v = attrs[name]
                assert v.startswith(("data:", "#")), f"<{tag} {name}={v[:40]}>"
    assert p.counts.get("script", 0) == 0 and p.counts.get("link", 0) == 0
    assert not re.search(r"url\(\s*['\"]?(https?:)?//", raw)


def test_report_single_run(gd_run):
    out = write_report(gd_run)
    assert out == gd_run / "report.html"
    p, raw = parse(out)
    assert_valid(p)
    assert_self_contained(p, raw)
    cells = headline_cells(p)
    # hand-computed numbers of the synthetic GD run (see conftest)
    assert cells["eos_onset_step"] == str(GD_ONSET)
    assert float(cells["lambda_at_onset"]) == pytest.approx(2.1 / GD_LR)
    assert float(cells["mean_eta_lambda_after_onset"]) == pytest.approx(2.025, abs=1e-3)
    assert float(cells["lambda_fall"]) == pytest.approx(1.5 / 21, rel=1e-3)
    assert cells["hvps_total"] == str(4 * GD_N)
    assert float(cells["hvps_per_estimate"]) == pytest.approx(4.0)
    assert float(cells["wall_seconds"]) == pytest.approx(3.0)
    assert cells["state"] == "completed"
    assert "mean_harmonic_sum_after_onset" not in cells  # GD: not shown
    # full batch, no test split: no batch-sharpness or held-out rows
    assert not {"batch_sharpness_last_third", "test_loss_final"} & set(cells)
    # the figure, embedded
    imgs = [a for t, a in p.attrs if t == "img"]
    assert len(imgs) == 1
    png = base64.b64decode(imgs[0]["src"].split(",", 1)[1])
    assert png[:8] == PNG_MAGIC
    assert (gd_run / "figures" / "training.png").read_bytes() == png  # generated, then reused
    # the config, and the metadata with the long index list truncated
    text = " ".join(p.text)
    assert "gd-synthetic" in text and "data_indices" in text
    assert "[0, 1, …, 499] (500 consecutive items)" in text
    assert "250, 251" not in text


def test_report_normalized_gd_shows_the_harmonic_sum(ngd_run):
    p, _ = parse(write_report(ngd_run))
    cells = headline_cells(p)
    assert cells["eos_onset_step"] == str(NGD_ONSET)
    assert float(cells["mean_harmonic_sum_after_onset"]) == pytest.approx(1.0)
    assert cells["lambda_threshold"] == "—"
    imgs = [a for t, a in p.attrs if t == "img"]
    assert [a["alt"] for a in imgs] == ["ngd-synthetic: training", "ngd-synthetic: flow"]


def test_report_minibatch_run_shows_batch_sharpness(tmp_path):
    run = make_run(tmp_path / "sgd", sgd_columns(), config=SGD_CONFIG)
    p, _ = parse(write_report(run))
    cells = headline_cells(p)
    # the conftest's batch sharpness 20, 19, 20 over the last third, shown to 4 digits
    assert float(cells["batch_sharpness_last_third"]) == pytest.approx(59.0 / 3, rel=1e-3)
    assert float(cells["lambda_last_third"]) == pytest.approx(8.7)
    assert float(cells["test_accuracy_final"]) == pytest.approx(0.58)
    assert cells["eos_onset_step"] == "30"  # eta * batch sharpness reaches 2, not eta * lambda_1


def test_report_escapes_text(tmp_path):
    cols = ngd_columns()
    run = make_run(tmp_path / "r", cols,
                   config={"name": "x<&>y", "optimizer": "normalized_gd",
                           "steps": len(cols["step"])},
                   metadata={"note": '<script>alert("x")</script>'},
                   status={"message": "loss <inf> & more"})
    out = write_report(run)
    p, raw = parse(out)
    assert_valid(p)
    assert "x<&>y" not in raw and "<script>" not in raw
    assert "x&lt;&amp;&gt;y" in raw
    assert "&lt;script&gt;" in raw
    assert "loss &lt;inf&gt; &amp; more" in raw
    title_text = raw[raw.index("<title>") + 7: raw.index("</title>")]
    assert title_text == "eosflow report: x&lt;&amp;&gt;y"
    assert p.counts.get("script", 0) == 0


def test_report_verify_table(gd_run):
    rows = [
        {"claim": "5 NGD EoS (Thm 4.7)", "quantity": "1/S_t + 1/S_t+1", "prediction": "1",
         "measured": 1.0003, "tolerance": "< 0.05", "passed": True},
        {"claim": "3 <flow>", "quantity": "slope", "prediction": "1", "measured": 0.41,
         "tolerance": ">= 0.8", "passed": False},
    ]
    write_json(gd_run / "verify.json", rows)
    p, raw = parse(write_report(gd_run))
    assert_valid(p)
    assert "1 of 2 checks passed." in " ".join(p.text)
    verify_rows = [r for r in p.rows if r and r[-1] in ("PASS", "FAIL")]
    assert [r[-1] for r in verify_rows] == ["PASS", "FAIL"]
    assert verify_rows[0][3] == "1" and verify_rows[1][3] == "0.41"
    assert "3 &lt;flow&gt;" in raw
    # the layout written by `eosflow verify` ({"checks": [...]}) reads the same
    write_json(gd_run / "verify.json", {"checks": rows, "seconds": 1.0})
    p, _ = parse(write_report(gd_run))
    assert "1 of 2 checks passed." in " ".join(p.text)


def test_report_sweep(sweep_run):
    p, raw = parse(write_report(sweep_run))
    assert_valid(p)
    point_rows = [r for r in p.rows if r and r[0].startswith("η = ")]
    assert [r[0] for r in point_rows] == ["η = 0.05", "η = 0.1", "η = 0.2"]
    # columns: point, onset, mean S, threshold, ...
    assert [r[1] for r in point_rows] == ["—", str(SWEEP_ONSET), "—"]
    assert float(point_rows[1][2]) == pytest.approx(2.0)
    assert "diverged at step 60 (sweep point 2)" in raw
    assert p.counts["img"] == 2  # training and sweep summary


def test_report_several_runs(gd_run, ngd_run, tmp_path):
    with pytest.raises(ValueError, match="out"):
        write_report([gd_run, ngd_run])
    out = write_report([gd_run, ngd_run], tmp_path / "both.html")
    p, raw = parse(out)
    assert_valid(p)
    assert_self_contained(p, raw)
    anchors = [a["href"] for t, a in p.attrs if t == "a"]
    assert anchors == ["#run-1", "#run-2"]
    ids = {a.get("id") for _, a in p.attrs}
    assert {"run-1", "run-2", "comparison"} <= ids
    assert p.counts["img"] == 4  # comparison, training (GD); training and flow (NGD)
    summary = {r[0]: r for r in p.rows if r and r[0] in ("gd-synthetic", "ngd-synthetic")}
    assert summary["gd-synthetic"][1] == str(GD_ONSET)
    assert summary["ngd-synthetic"][1] == str(NGD_ONSET)


def test_figures_regenerated_only_when_stale(gd_run):
    write_report(gd_run)
    png = gd_run / "figures" / "training.png"
    old = png.stat().st_mtime
    future = old + 100
    os.utime(png, (future, future))  # figures newer than the data: reused
    write_report(gd_run)
    assert png.stat().st_mtime == future
    for f in (gd_run / "metrics").glob("*.npz"):  # data newer than the figures: redrawn
        os.utime(f, (future + 100, future + 100))
    write_report(gd_run)
    assert png.stat().st_mtime != future


def test_report_of_a_real_run(real_toy_run, tmp_path):
    out = write_report(real_toy_run, tmp_path / "real.html")
    p, raw = parse(out)
    assert_valid(p)
    run = load_run(real_toy_run)
    cells = headline_cells(p)
    assert cells["hvps_total"] == str(run.status["hvps_total"])
    assert cells["steps"] == "300"
    assert "real-toy-a" in raw and "toy loss (see problem)" in raw


def test_report_rejects_a_directory_that_is_not_a_run(tmp_path):
    with pytest.raises(RunDirError, match="not an eosflow run"):
        write_report(tmp_path)


def test_format_value():
    assert format_value(None) == "—"
    assert format_value(12) == "12"
    assert format_value(0.123456) == "0.1235"
    assert format_value(True) == "yes"


def test_report_embeds_the_verify_figure(gd_run):
    from .test_plots import _tracking_json

    _tracking_json(gd_run / "verify.json")
    p, _ = parse(write_report(gd_run))
    assert_valid(p)
    assert "1 of 2 checks passed." in " ".join(p.text)
    alts = [a["alt"] for t, a in p.attrs if t == "img"]
    assert alts == ["gd-synthetic: verify", "gd-synthetic: training"]


def test_report_of_a_run_without_metrics_yet(tmp_path):
    from eosflow.experiments import Config

    run = tmp_path / "fresh"  # started, killed before its first chunk was written
    write_json(run / "config.json", Config(name="fresh").to_dict())
    write_json(run / "status.json", {"state": "running", "step": 0, "hvps_total": 0,
                                     "wall_seconds": 0.0})
    p, _ = parse(write_report(run))
    assert_valid(p)
    assert p.counts.get("img", 0) == 0
    assert headline_cells(p)["state"] == "running"
