"""Body (non-embedding) costs beside the totals: exact against the real modules, matchable, warned about."""

import pytest

from matcher.cli import main
from matcher.cost import measured
from matcher.cost.analytic import body_train_flops_per_token, forward_flops_per_token, param_counts
from matcher.plan.planner import build_sweep, make_plan
from matcher.plan.presets import get_preset
from matcher.plan.request import PlanRequest

VOCAB_50K = 50304  # a GPT-2-sized vocabulary padded to a multiple of 64


@pytest.mark.parametrize("tied", [True, False])
@pytest.mark.parametrize("variant", ["la", "dr_da"])
def test_body_and_total_costs_are_exact_against_the_real_modules(tied, variant):
    cfg = get_preset("la-tiny").replace(variant=variant, depth=3, vocab_size=640, tie_embeddings=tied)
    params = param_counts(cfg)
    counted = measured.measured_params(cfg)
    counted_embedding = counted["embedding"] + counted["lm_head"]
    assert params.total == counted["total"]
    assert params.embedding == counted_embedding == cfg.vocab_size * cfg.d_model * (1 if tied else 2)
    assert params.non_embedding == counted["total"] - counted_embedding
    flops = measured.measured_forward_flops(cfg, seq_len=32)
    assert sum(forward_flops_per_token(cfg, seq_len=32).values()) == pytest.approx(flops["total"], rel=1e-9)
    assert body_train_flops_per_token(cfg, seq_len=32) == pytest.approx(3 * (flops["total"] - flops["lm_head"]),
                                                                        rel=1e-9)


def test_match_body_params_meets_the_tolerance_with_a_50k_vocabulary():
    plan = make_plan(PlanRequest(target="la-tiny", variants="dr,dr_da", vocab_size=VOCAB_50K,
                                 match="body_flops,body_params"))
    assert plan.matched == ("body_flops", "body_params")
    for run in plan.runs[1:]:
        assert max(abs(run.match.residuals[q]) for q in ("body_flops", "body_params")) <= plan.spec.tolerance
        assert run.match.solved == ("body_flops", "body_params")
    # the body costs the search matched are those the sweep records
    sweep = build_sweep(plan)
    target, variant = sweep.runs[0].predicted, sweep.runs[1].predicted
    assert abs(variant["body_params"] / target["body_params"] - 1) <= plan.spec.tolerance
    assert not any("embeddings are" in line for line in plan.notices)


def test_embedding_dominated_targets_get_a_warning_that_names_the_body_match():
    plan = make_plan(PlanRequest(target="la-tiny", variants="dr", vocab_size=VOCAB_50K))
    warning = " ".join(next(line for line in plan.notices if "embeddings are" in line).split())
    assert warning.startswith("embeddings are 93% of la-tiny's")
    assert "match the body with --match body_flops,body_params,inference_memory_bytes" in warning
    assert not any("embeddings are" in line for line in make_plan(PlanRequest(target="la-tiny")).notices)


def test_plan_and_cost_report_body_and_totals_side_by_side(capsys):
    import json

    assert main(["plan", "--target", "la-tiny", "--variants", "dr", "--dry-run", "--no-measure", "--json",
                 "--match", "body_flops,body_params"]) == 0
    result = json.loads(capsys.readouterr().out)
    dr = result["runs"][1]
    assert {"params", "flops", "body_params", "body_flops"} <= set(dr["residuals"])
    assert dr["predicted"]["body_params"] == param_counts(get_preset("la-tiny").replace(**{
        k: dr["model"][k] for k in ("variant", "d_ff", "n_experts")})).non_embedding
    assert main(["cost", "la-tiny", "--no-measure", "--json"]) == 0
    analytic = json.loads(capsys.readouterr().out)["analytic"]
    cfg = get_preset("la-tiny")
    assert analytic["params"]["non_embedding"] == param_counts(cfg).non_embedding
    assert analytic["flops"]["body_train_per_token"] == body_train_flops_per_token(cfg)
