"""The printed tables' rows as a reader sees them."""

from selfconsistency.report_tables import comparison_table


def test_a_budgets_comparison_is_named_as_its_row_is():
    """results.json names a budget's comparison by its stops name (budget:blend-asc:20, budget:asc:$5+beta:0.95);
    the table shows it as the budget's row does (budget 20), short enough for an 80-column terminal."""
    numbers = {"difference": 0.01, "low": -0.02, "high": 0.04, "p_value": 0.5}
    results = {"comparisons": [{"name": "T=0.7 budget:blend-asc:20 vs fixed N at 2.00 paths", **numbers},
                               {"name": "T=0.7 budget:asc:$5+beta:0.95 vs fixed N at 3.10 paths", **numbers},
                               {"name": "T=0.7 beta:0.95 vs fixed N at 9.50 paths", **numbers}]}
    names = [row.split(" | ")[0].lstrip("| ") for row in comparison_table(results)[4:7]]
    assert names == ["T=0.7 budget 20 vs fixed N at 2.00 paths", "T=0.7 budget $5+beta:0.95 vs fixed N at 3.10 paths",
                     "T=0.7 beta:0.95 vs fixed N at 9.50 paths"]
