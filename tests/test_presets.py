"""The dr/dr_da presets are what `matcher plan` finds against the la preset of the same size."""

import pytest

from matcher.plan.planner import make_plan
from matcher.plan.presets import get_preset
from matcher.plan.request import PlanRequest


@pytest.mark.parametrize("size", ["tiny", "100m", "1b", "2b"])
def test_recurrent_presets_are_the_search_result(size):
    plan = make_plan(PlanRequest(target=f"la-{size}", variants="dr,dr_da"))
    for run in plan.runs[1:]:
        assert get_preset(f"{run.label}-{size}") == run.config, f"{run.label}-{size}"
        assert max(abs(run.match.residuals[q]) for q in ("flops", "params")) < 0.02
