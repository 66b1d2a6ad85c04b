"""examples/custom_method.py runs: a user's method, registered, swept, reported beside the search."""

from __future__ import annotations

import csv

from examples import custom_method


def test_custom_method_example_runs_and_reaches_the_report(tmp_path):
  page = custom_method.main(tmp_path, epochs=1, width=4, max_width=2, target=0.5)
  assert page.is_file()
  with open(page.parent / "gap_table.csv") as handle:
    rows = list(csv.DictReader(handle))
  methods = {row["method"] for row in rows}
  assert {"combinatorial", "magnitude_at_init"} <= methods
  custom = next(r for r in rows if r["method"] == "magnitude_at_init")
  assert int(custom["runs"]) == 12  # 3 targets x 4 repeats, all stored
  assert "magnitude_at_init" in page.read_text()
