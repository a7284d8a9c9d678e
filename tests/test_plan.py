"""`matcher plan`: the sweep it writes, its safety rules, training defaults and error messages."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from matcher.cli import main
from matcher.cost.analytic import param_counts, train_flops_per_token
from matcher.errors import ConfigError, MatchError
from matcher.plan.planner import default_training, make_plan
from matcher.plan.presets import get_preset
from matcher.plan.request import PlanRequest, parse_set
from matcher.plan.search import costs_of
from matcher.plan.sweep import load_sweep, predict


def plan_json(capsys, *args):
    assert main(["plan", *args, "--json", "--no-measure"]) == 0, capsys.readouterr().err
    return json.loads(capsys.readouterr().out)


def test_writes_a_valid_sweep_at_the_default_path(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert main(["plan", "--target", "la-1b", "--no-measure"]) == 0
    printed = capsys.readouterr().out
    assert "wrote sweeps/la-1b-vs-dr-dr_da.yaml (3 runs)" in printed and "Δ FLOPs" in printed
    sweep = load_sweep(tmp_path / "sweeps/la-1b-vs-dr-dr_da.yaml")
    assert [(r.name, r.role, r.model.variant) for r in sweep.runs] == [
        ("la-1b", "target", "la"), ("dr", "variant", "dr"), ("dr_da", "variant", "dr_da")]
    assert sweep.meta.target == "la-1b" and sweep.meta.variants == ["dr", "dr_da"]
    assert sweep.meta.matched == ["flops", "params", "inference_memory_bytes"]
    assert sweep.meta.command == "matcher plan --target la-1b"
    assert sweep.runs[0].model == get_preset("la-1b")
    assert len({r.train.tokens_per_step for r in sweep.runs}) == 1
    assert main(["sweep", "validate", "sweeps/la-1b-vs-dr-dr_da.yaml"]) == 0


def test_round_trip_sweep_to_configs_to_costs(tmp_path, capsys):
    path = tmp_path / "s.yaml"
    result = plan_json(capsys, "--target", "la-2b", "--depth", "16", "--out", str(path))
    sweep = load_sweep(path)
    for run, planned in zip(sweep.runs, result["runs"], strict=True):
        assert run.model.to_dict() == planned["model"]
        assert predict(run.model, run.train, sweep.conventions) == run.predicted == planned["predicted"]
        if planned["role"] == "variant":
            assert costs_of(run.model, _spec(sweep, run)) == pytest.approx(planned["costs"], rel=1e-12)
    variants = [r for r in result["runs"] if r["role"] == "variant"]
    assert all(r["model"]["depth"] == 16 and abs(r["residuals"]["params"]) < 0.01 for r in variants)


def _spec(sweep, run):
    from matcher.plan.search import MatchSpec

    return MatchSpec(conventions=sweep.conventions, batch=run.train.batch_size, seq_len=run.train.seq_len)


def test_dry_run_writes_nothing(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert main(["plan", "--target", "la-tiny", "--dry-run", "--no-measure"]) == 0
    assert "dry run: would write sweeps/la-tiny-vs-dr-dr_da.yaml" in capsys.readouterr().out
    assert list(tmp_path.iterdir()) == []


def test_never_overwrites_without_force(tmp_path, capsys):
    path = tmp_path / "s.yaml"
    assert main(["plan", "--target", "la-tiny", "--out", str(path), "--no-measure"]) == 0
    before = path.read_text()
    assert main(["plan", "--target", "la-tiny", "--variants", "dr", "--out", str(path), "--no-measure"]) == 2
    assert "exists; pass --force to overwrite it" in capsys.readouterr().err
    assert path.read_text() == before
    assert main(["plan", "--target", "la-tiny", "--variants", "dr", "--out", str(path), "--no-measure",
                 "--force"]) == 0
    assert [r.name for r in load_sweep(path).runs] == ["la-tiny", "dr"]


@pytest.mark.parametrize(
    "edit, message",
    [
        (lambda d: d["runs"][1]["model"].update(d_fff=64),
         "runs[1].model.d_fff: unknown field (did you mean 'd_ff'?)"),
        (lambda d: d["runs"][2]["model"].update(n_experts="many"),
         "runs[2].model.n_experts: must be int, got 'many'"),
        (lambda d: d["runs"][0]["train"].pop("total_tokens"),
         "runs[0].train.total_tokens: missing (required)"),
    ],
)
def test_edited_sweeps_are_rejected_with_the_key_named(tmp_path, capsys, edit, message):
    path = tmp_path / "s.yaml"
    assert main(["plan", "--target", "la-tiny", "--out", str(path), "--no-measure"]) == 0
    data = yaml.safe_load(path.read_text())
    edit(data)
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    capsys.readouterr()
    assert main(["sweep", "validate", str(path)]) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err


def test_seeds_make_one_run_per_seed_grouped_by_variant(tmp_path, capsys):
    path = tmp_path / "s.yaml"
    plan_json(capsys, "--target", "la-tiny", "--seeds", "0,1", "--out", str(path))
    sweep = load_sweep(path)
    assert [(r.name, r.group, r.train.seed) for r in sweep.runs] == [
        ("la-tiny-s0", "la-tiny", 0), ("la-tiny-s1", "la-tiny", 1), ("dr-s0", "dr", 0), ("dr-s1", "dr", 1),
        ("dr_da-s0", "dr_da", 0), ("dr_da-s1", "dr_da", 1)]


def test_json_reports_residuals_memory_ratios_and_work(capsys):
    result = plan_json(capsys, "--target", "la-2b", "--dry-run")
    assert result["written"] is False and result["sweep"] == "sweeps/la-2b-vs-dr-dr_da.yaml"
    target, dr, dr_da = result["runs"]
    assert target["memory_ratio"] == 1.0 and "residuals" not in target
    for run in (dr, dr_da):
        assert set(run["residuals"]) == {"flops", "params", "inference_memory_bytes", "train_memory_bytes",
                                         "body_flops", "body_params"} and run["steps"] >= 1
        assert run["evaluations"] > 0 and run["inference_cache_ratio"] >= 1.0
        assert run["align"] in (32, 64) and run["model"]["d_ff"] % run["align"] == 0
        assert max(abs(run["residuals"][q]) for q in result["matched"]) <= 0.005
    assert dr_da["memory_ratio"] > 1.1  # depth keys and values are kept for backward
    # 20 tokens x 2.0B parameters, in whole steps of 512 x 2048 tokens
    assert result["train"]["total_tokens"] == round(40e9 / 2**20) * 2**20


def test_training_defaults_scale_with_the_target():
    tiny, big = get_preset("la-tiny"), get_preset("la-2b")
    small_train = default_training(train_flops_per_token(tiny), param_counts(tiny).total, tiny.seq_len)
    big_train = default_training(train_flops_per_token(big), param_counts(big).total, big.seq_len)
    assert abs(big_train.total_tokens / (20 * param_counts(big).total) - 1) < 0.02
    assert big_train.tokens_per_step > 100 * small_train.tokens_per_step and big_train.lr < small_train.lr
    for train in (small_train, big_train):
        assert train.total_tokens % train.tokens_per_step == 0 and train.eval_tokens[-1] == train.total_tokens
        assert all(t % train.tokens_per_step == 0 for t in train.eval_tokens)
        ratios = [b / a for a, b in zip(train.eval_tokens, train.eval_tokens[1:], strict=False)]
        assert all(1.8 < r < 2.2 for r in ratios) and len(train.eval_tokens) == 8
    fixed = default_training(1e9, 1e8, 512, tokens=10**9, batch=64)
    assert (fixed.total_tokens, fixed.batch_size, fixed.seq_len) == (round(10**9 / 32768) * 32768, 64, 512)


def test_budgets_instead_of_a_target(tmp_path, capsys):
    path = tmp_path / "s.yaml"
    result = plan_json(capsys, "--flops", "2.2e9", "--params", "1e9", "--variants", "la,dr",
                       "--out", str(path))
    target, dr = result["runs"]
    assert (target["label"], target["role"]) == ("la", "target") and result["target"] == "budget"
    assert abs(dr["residuals"]["params"]) < 0.01 and abs(dr["costs"]["flops"] / 2.2e9 - 1) < 0.02
    command = "matcher plan --variants la,dr --flops 2.2e+09 --params 1e+09 --base la-1b"
    assert load_sweep(path).meta.command == command


def test_lookalike_names_are_read_with_a_notice(capsys):
    args = ["plan", "--target", "lа-tiny", "--variants", "DR,dr-da", "--dry-run", "--no-measure", "--json"]
    assert main(args) == 0  # Cyrillic а above
    captured = capsys.readouterr()
    result = json.loads(captured.out)
    assert result["target"] == "la-tiny" and result["variants"] == ["dr", "dr_da"]
    err = " ".join(captured.err.split())
    assert "read preset 'lа-tiny' as 'la-tiny' (non-ASCII 'а')" in err
    assert "read variant 'dr-da' as 'dr_da'" in err


@pytest.mark.parametrize(
    "args, message",
    [
        (["--target", "la-3b"], "unknown preset 'la-3b'. closest: la-2b"),
        (["--target", "la-1b", "--variants", "dr,rnn"],
         "unknown variant 'rnn'. Known variants: la, dr, dr_da."),
        (["--target", "la-1b", "--set", "d_modle=3"],
         "--set d_modle: unknown field (did you mean 'd_model'?). Valid fields: vocab_size, d_model"),
        (["--target", "la-1b", "--set", "variant=dr"], "--set variant=...: the variants come from"),
        (["--target", "la-1b", "--set", "top_k=two"], "top_k must be int, got 'two'"),
        (["--target", "la-1b", "--set", "depth"], "--set takes key=value, got 'depth'"),
        (["--target", "la-1b", "--match", "flops,speed"], "--match takes a comma-separated subset"),
        (["--target", "la-1b", "--seeds", "0,x"], "--seeds takes comma-separated integers"),
        (["--target", "la-1b", "--flops", "1e9"], "give either --target or budgets"),
        ([], "give --target"),
        (["--target", "la-1b", "--d-model", "1000"], "--d-model 1000 is not a multiple of the head width 64"),
        (["--target", "la-1b", "--depth", "64"],
         "dr: training FLOPs per token cannot be matched: its smallest config (d_ff 64, n_experts 2) "
         "already has 3.08G, +38.4% over the target's 2.22G"),
        (["--target", "la-1b", "--depth", "64"], "Possible with --depth 32 or --d-model 512"),
        (["--target", "la-1b", "--max-memory-ratio", "1.0", "--variants", "dr_da"],
         "dr_da: training memory cannot be kept under the limit"),
        (["--target", "la-1b", "--max-memory-ratio", "1.0", "--variants", "dr_da"],
         "Possible with --max-memory-ratio 1.1"),
        (["--flops", "2e9", "--variants", "la"], "with budgets, la is the baseline"),
        (["--flops", "1e9", "--params", "1e7"], "la (baseline): training FLOPs per token cannot be matched"),
    ],
)
def test_user_errors_are_one_clear_message(capsys, args, message):
    assert main(["plan", *args, "--dry-run", "--no-measure"]) == 2
    err = " ".join(capsys.readouterr().err.split())  # the console wraps long lines
    assert message in err and "Traceback" not in err


def test_a_missed_tolerance_says_what_the_search_tried():
    """The automatic search (no --align, no --free) names the lattices and third free variables it ran,
    not a fixed list: la-1b's expert (d_ff 1,024) is halved from 64 to 32 only, and a dense target has no
    router to scan."""
    with pytest.raises(MatchError) as caught:
        make_plan(PlanRequest(target="la-1b", variants="dr", tolerance=1e-4))
    message = " ".join(str(caught.value).split())
    assert "the search tried d_ff multiples of 64, 32 and the third free variables n_kv_heads, router_rank, top_k" \
        in message
    with pytest.raises(MatchError) as caught:
        make_plan(PlanRequest(target="la-1b", variants="dr", tolerance=1e-4, set_fields=["n_experts=0", "top_k=0"]))
    message = " ".join(str(caught.value).split())
    assert "router_rank" not in message.split("the search tried")[1]


def test_set_overrides_and_holds():
    assert parse_set(["router_rank=64", "tie_embeddings=true", "rope_theta=5e5"]) == {
        "router_rank": 64, "tie_embeddings": True, "rope_theta": 5e5}
    with pytest.raises(ConfigError, match="Valid fields: .*n_experts"):
        parse_set(["experts=3"])
    plan = make_plan(PlanRequest(target="la-1b", variants="dr", d_model=768, set_fields=["n_experts=300"]))
    dr = plan.runs[1]
    cfg = dr.config
    assert (cfg.d_model, cfg.n_heads, cfg.n_kv_heads, cfg.n_experts) == (768, 12, 3, 300)
    assert dr.match.free[0] == "d_ff" and "n_experts" not in dr.match.free
    assert any("n_experts held at 300" in note for note in plan.notices)


def test_tiny_target_uses_a_finer_alignment_and_matches_both_variants(capsys):
    result = plan_json(capsys, "--target", "la-tiny", "--dry-run")
    assert result["align"] == 16
    for run in result["runs"][1:]:
        assert max(abs(run["residuals"][q]) for q in ("flops", "params")) < 0.02


def test_analytic_plan_imports_no_heavy_library(tmp_path):
    code = ("import sys; from matcher.cli import main; main(['plan', '--target', 'la-2b', '--dry-run', "
            "'--no-measure']); print(sorted(m for m in ('torch', 'pandas', 'scipy', 'numpy') if m in sys.modules), "
            "file=sys.stderr)")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                          cwd=tmp_path, env={"PYTHONPATH": str(Path(__file__).resolve().parents[1])})
    assert done.stderr.strip().endswith("[]")


def test_tokens_batch_and_seq_len_overrides(capsys):
    result = plan_json(capsys, "--target", "la-tiny", "--tokens", "1e6", "--batch", "4", "--seq-len", "256",
                       "--dry-run")
    train = result["train"]
    assert (train["total_tokens"], train["batch_size"]) == (round(1e6 / 1024) * 1024, 4)
    assert all(run["model"]["seq_len"] == 256 for run in result["runs"])


def test_measured_check_agrees_with_the_cost_model(capsys):
    pytest.importorskip("matcher.cost.measured", reason="matcher.cost.measured comes with the models branch")
    assert main(["plan", "--target", "la-tiny", "--dry-run", "--json"]) == 0
    checks = json.loads(capsys.readouterr().out)["measured"]
    assert [r["run"] for r in checks] == ["dr", "dr_da"]
    assert all(abs(r["params_diff"]) <= 1e-3 and abs(r["flops_diff"]) <= 1e-3 for r in checks)


def test_measured_mismatch_is_an_error(capsys, monkeypatch, tmp_path):
    measure = pytest.importorskip("matcher.cost.measured", reason="matcher.cost.measured comes with the models branch")
    counted = measure.measured_params
    off_by_a_percent = lambda cfg: {**counted(cfg), "total": round(counted(cfg)["total"] * 1.01)}
    monkeypatch.setattr(measure, "measured_params", off_by_a_percent)
    path = tmp_path / "s.yaml"
    assert main(["plan", "--target", "la-tiny", "--variants", "dr", "--out", str(path)]) == 2
    err = " ".join(capsys.readouterr().err.split())
    assert "measured check failed: dr parameters +1.000% between matcher.cost.analytic and the real modules" in err
    assert not path.exists()


def test_a_coarse_lattice_gets_a_hint_that_a_finer_align_matches_closer():
    # la-2b -> dr_da at --align 64 (given, so not chosen by the search): the best lattice point is off by
    # ~0.9% on FLOPs (half a d_ff step)
    coarse = make_plan(PlanRequest(target="la-2b", variants="dr_da", align=64, tolerance=0.02))
    worst = max(abs(coarse.runs[1].match.residuals[q]) for q in ("flops", "params"))
    assert worst > 0.005
    (hint,) = [n for n in coarse.notices if "--align 32" in n]
    fine = make_plan(PlanRequest(target="la-2b", variants="dr_da", align=32))
    cfg = fine.runs[1].config
    assert f"d_ff {cfg.d_ff}, n_experts {cfg.n_experts}" in hint
    assert max(abs(fine.runs[1].match.residuals[q]) for q in ("flops", "params")) <= 0.005
    assert not [n for n in fine.notices if "--align" in n]  # close enough: no hint
    # the default chooses that lattice itself and says why
    auto = make_plan(PlanRequest(target="la-2b", variants="dr_da"))
    assert auto.runs[1].config == cfg and auto.runs[1].match.align == 32
    assert [n for n in auto.notices if "d_ff a multiple of 32, because with 64 the best point was off by 0.89%" in n]


def test_micro_batch_accumulates_and_memory_is_one_micro_batch(tmp_path, capsys):
    from matcher.cost.analytic import memory

    plan = make_plan(PlanRequest(target="la-1b", variants="dr", micro_batch=4))
    train = plan.train
    assert train.micro_batch_size == 4 and train.batch_size % 4 == 0 and train.batch_size > 4
    assert plan.request.command_line() == "matcher plan --target la-1b --variants dr --micro-batch 4"
    for run in plan.runs:  # predicted training memory: one forward of 4 sequences, not the whole batch
        predicted = predict(run.config, train, plan.spec.conventions)["train_memory_bytes"]
        assert predicted == memory(run.config, batch=4, seq_len=train.seq_len,
                                   conv=plan.spec.conventions).training_bytes
    whole = make_plan(PlanRequest(target="la-1b", variants="dr"))
    assert whole.runs[1].predicted["train_memory_bytes"] > plan.runs[1].predicted["train_memory_bytes"]
    assert main(["plan", "--target", "la-1b", "--micro-batch", "7", "--dry-run", "--no-measure"]) == 2
    assert "--micro-batch 7 does not divide the batch" in capsys.readouterr().err


def test_the_recorded_command_line_plans_the_same_request_again(capsys):
    """Each plan option is declared once (PlanRequest): the CLI parses it into the request, and the
    sweep's command line, read back by the CLI, gives the same request and the same command."""
    args = ["--target", "la-tiny", "--variants", "dr_da", "--align", "8", "--match", "flops,params",
            "--tolerance", "0.2", "--tokens", "1.5e6", "--batch", "16", "--micro-batch", "8", "--seq-len", "64",
            "--seeds", "0,1", "--depth", "3", "--set", "router_rank=16", "--set", "da_heads=2", "--causal-half",
            "--recompute", "full", "--activation-dtype", "fp32"]
    first = plan_json(capsys, *args, "--dry-run")
    command = first["command"]
    assert command == ("matcher plan --target la-tiny --variants dr_da --align 8 --match flops,params "
                       "--tolerance 0.2 --tokens 1500000 --batch 16 --micro-batch 8 --seq-len 64 --seeds 0,1 "
                       "--depth 3 --set router_rank=16 --set da_heads=2 --causal-half --recompute full "
                       "--activation-dtype fp32")
    again = plan_json(capsys, *command.split()[2:], "--dry-run")
    assert again["command"] == command
    assert again["runs"] == first["runs"] and again["train"] == first["train"]


FOUR_CASES = [(t, d) for t in ("la-1b", "la-2b") for d in (None, 16)]


@pytest.mark.parametrize("target, depth", FOUR_CASES)
def test_the_default_plan_meets_half_a_percent_on_every_matched_quantity(target, depth):
    plan = make_plan(PlanRequest(target=target, depth=depth))
    assert plan.spec.tolerance == 0.005 and plan.matched == ("flops", "params", "inference_memory_bytes")
    for run in plan.runs[1:]:
        m = run.match
        assert max(abs(m.residuals[q]) for q in plan.matched) <= 0.005, (run.label, m.residuals)
        assert m.align >= 32 and run.config.d_ff % m.align == 0
        if m.align != 64 or len(m.free) > 2:  # the search chose something: it says what and why
            (note,) = [n for n in plan.notices if n.startswith(f"{run.label}: ") and
                       ("lattice: d_ff a multiple of" in n or "third free variable" in n)]
            assert "the best" in note
    if depth == 16:  # half the applied layers: the SA KV cache only n_kv_heads can restore
        assert all(run.config.n_kv_heads == 2 * plan.target.config.n_kv_heads for run in plan.runs[1:])


@pytest.mark.parametrize("target, depth", FOUR_CASES)
def test_a_third_free_variable_reaches_a_tenth_of_a_percent(target, depth):
    plan = make_plan(PlanRequest(target=target, depth=depth, free="d_ff,n_experts,router_rank",
                                 match="flops,params"))
    for run in plan.runs[1:]:
        assert run.match.free == ("d_ff", "n_experts", "router_rank")
        assert max(abs(run.match.residuals[q]) for q in ("flops", "params")) <= 0.001, run.match.residuals
        assert run.config.d_ff % 64 == 0 and run.config.router_rank % 16 == 0


def test_an_unreachable_quantity_names_its_gap_and_the_variable_that_closes_it():
    # depth 16 halves the SA KV cache; with d_ff and n_experts alone inference memory stays ~0.8% low
    with pytest.raises(MatchError, match=r"inference memory .* cannot be matched .*inference_memory_bytes -0\.\d+%.*"
                                         r"--free d_ff,n_experts,n_kv_heads"):
        make_plan(PlanRequest(target="la-1b", variants="dr", depth=16, free="d_ff,n_experts"))
    plan = make_plan(PlanRequest(target="la-1b", variants="dr", depth=16, free="d_ff,n_experts,n_kv_heads"))
    assert plan.runs[1].config.n_kv_heads == 8


def test_free_and_match_options_are_checked():
    for bad in ("d_ff,n_experts,router_rank,top_k", "router_rank", "d_ff,heads"):
        with pytest.raises(ConfigError, match="--free takes d_ff and/or n_experts"):
            make_plan(PlanRequest(target="la-1b", free=bad))
    plan = make_plan(PlanRequest(target="la-1b", variants="dr", free="d_ff", match="flops"))
    assert plan.runs[1].match.free == ("d_ff",) and plan.runs[1].config.n_experts == 16
    plan = make_plan(PlanRequest(target="la-1b", variants="dr", match="flops,memory", tolerance=0.05))
    assert plan.matched == ("flops", "train_memory_bytes")  # `memory` is training memory, as old sweeps say


def test_old_match_names_are_read_as_the_current_ones_with_a_notice():
    plan = make_plan(PlanRequest(target="la-1b", variants="dr", match="flops,train_memory", tolerance=0.05))
    assert plan.matched == ("flops", "train_memory_bytes")
    (renamed,) = [n for n in plan.notices if n.startswith("--match")]
    assert "train_memory -> train_memory_bytes" in renamed and "use the current names" in renamed
    assert not [n for n in make_plan(PlanRequest(target="la-1b", variants="dr")).notices if "old name" in n]


def test_inference_memory_is_weights_and_caches_counted_independently():
    from matcher.cost.analytic import Conventions, inference_memory_bytes
    from matcher.cost.measured import measured_params

    for name in ("la-1b", "dr_da-1b"):
        cfg = get_preset(name)
        weights = 2 * measured_params(cfg)["total"]  # bf16 weights of the real module (meta device)
        sa_kv = 4 * 2048 * 32 * 2 * 4 * 64 * 2  # batch 4 x 2048 tokens x 32 layers x (k, v) x 4 kv heads x 64 x bf16
        da = 4 * 32 * 2 * 1 * cfg.da_head_dim * 2 if name.startswith("dr_da") else 0  # one token in flight
        assert inference_memory_bytes(cfg, 4, 2048) == weights + sa_kv + da
        fp32 = Conventions(inference_weight_dtype="fp32")
        assert inference_memory_bytes(cfg, 4, 2048, fp32) == 2 * weights + sa_kv + da
    plan = make_plan(PlanRequest(target="la-2b", variants="dr_da", inference_batch=8, inference_context=4096))
    assert plan.spec.targets["inference_memory_bytes"] == inference_memory_bytes(plan.target.config, 8, 4096)
    assert abs(plan.runs[1].match.residuals["inference_memory_bytes"]) <= 0.005


def test_a_ladder_writes_one_consistent_sweep_per_rung_and_a_manifest(tmp_path, capsys):
    from matcher.plan.ladder import load_ladder

    out = tmp_path / "ladder" / "ladder.yaml"
    result = plan_json(capsys, "--ladder", "la-100m,la-1b,la-2b", "--variants", "dr,dr_da", "--out", str(out))
    data = load_ladder(out)
    assert [r["target"] for r in data["rungs"]] == ["la-100m", "la-1b", "la-2b"]
    assert data["rules"]["vocab_size"] == 50304 and data["rules"]["tokens_per_param"] == 20
    assert data["rules"]["tokens_per_param_counts"] == "body (non-embedding) parameters"
    sweeps = [load_sweep(out.parent / rung["sweep"]) for rung in data["rungs"]]
    for rung, sweep in zip(data["rungs"], sweeps):
        assert {run.model.vocab_size for run in sweep.runs} == {50304}  # one vocabulary, la-100m's 32000 raised
        target = sweep.target
        assert rung["total_params"] == param_counts(target.model).total
        # one rule: 20 tokens per target body (non-embedding) parameter, in whole steps, named in sweep meta
        assert rung["body_params"] == param_counts(target.model).non_embedding
        body_rule = default_training(train_flops_per_token(target.model), rung["body_params"], target.train.seq_len)
        assert target.train.total_tokens == body_rule.total_tokens
        assert abs(target.train.total_tokens / (20 * rung["body_params"]) - 1) < 0.05  # 2 significant digits
        assert sweep.meta.tokens_rule == "20 tokens per body (non-embedding) parameter of the target, in whole steps"
        assert rung["train_flops"] == train_flops_per_token(target.model) * target.train.total_tokens
        assert sweep.meta.command == f"matcher plan --target {rung['target']} --vocab-size 50304"
        assert [r.group for r in sweep.runs] == [rung["target"], "dr", "dr_da"]
    lrs = [rung["lr"] for rung in data["rungs"]]
    assert lrs == sorted(lrs, reverse=True)  # the compute fit: bigger rungs, smaller rates
    assert result["written"] and [p["target"] for p in result["plans"]] == ["la-100m", "la-1b", "la-2b"]


def test_a_ladder_rung_given_as_a_config_file_is_named_by_its_stem(tmp_path, monkeypatch, capsys):
    """A rung given as a path (`--ladder la-100m,configs/my 1b.yaml`) put the path into the ladder's folder
    name, its sweep names and its run folders."""
    import yaml

    monkeypatch.chdir(tmp_path)
    (tmp_path / "configs").mkdir()
    (tmp_path / "configs" / "my 1b.yaml").write_text(yaml.safe_dump(get_preset("la-1b").to_dict()))
    result = plan_json(capsys, "--ladder", "la-100m,configs/my 1b.yaml", "--variants", "dr", "--no-measure")
    assert result["written"]
    (manifest,) = Path("sweeps").glob("*/ladder.yaml")
    assert manifest.parent.name == "ladder-la-100m-my-1b-vs-dr"
    rung_sweep = load_sweep(manifest.parent / "ladder-la-100m-my-1b-vs-dr-my-1b.yaml")
    assert [run.name for run in rung_sweep.runs] == ["my-1b", "dr"]


def test_a_ladder_manifest_given_as_a_sweep_names_its_sweeps(tmp_path, monkeypatch, capsys):
    """`matcher run ladder.yaml` answered with 11 sweep-schema errors; run, sweep validate, sweep show and
    status now say it is a ladder manifest and name the sweeps (or results folders) of its rungs."""
    monkeypatch.chdir(tmp_path)
    out = Path("lad") / "ladder.yaml"
    plan_json(capsys, "--ladder", "la-100m,la-1b", "--variants", "dr", "--out", str(out))
    sweeps = ["lad/lad-la-100m.yaml", "lad/lad-la-1b.yaml"]
    assert all(Path(sweep).is_file() for sweep in sweeps)
    for command in (["run", str(out), "--dry-run"], ["sweep", "validate", str(out)], ["sweep", "show", str(out)]):
        assert main(command) == 2
        message = " ".join(capsys.readouterr().err.split())
        assert f"{out.as_posix()} is a ladder manifest (written by `matcher plan --ladder`), not a sweep" in message
        assert f"beside it: {sweeps[0]}, {sweeps[1]}; give one of them (e.g. `matcher run {sweeps[0]}`)" in message
        assert "problem(s)" not in message
    assert main(["status", str(out)]) == 2
    message = " ".join(capsys.readouterr().err.split())
    assert "is a ladder manifest; its rungs train in results/lad-la-100m, results/lad-la-1b" in message
    assert main(["status", sweeps[0]]) == 2
    assert f"for the sweep {sweeps[0]}, results/lad-la-100m" in " ".join(capsys.readouterr().err.split())


def test_a_ladder_refuses_what_would_break_its_rule():
    from matcher.plan.ladder import plan_ladder

    with pytest.raises(ConfigError, match="drop --tokens"):
        plan_ladder(PlanRequest(ladder="la-100m,la-1b", tokens=1e9))
    with pytest.raises(ConfigError, match="must grow in parameters, smallest first"):
        plan_ladder(PlanRequest(ladder="la-1b,la-100m"))
    with pytest.raises(ConfigError, match="two or more"):
        plan_ladder(PlanRequest(ladder="la-1b"))


def test_a_ladder_with_a_tokenizer_takes_its_vocabulary_on_every_rung():
    from matcher.plan.ladder import plan_ladder

    ladder = plan_ladder(PlanRequest(ladder="la-100m,la-1b", variants="dr", tokenizer="char"))
    assert ladder.vocab_size == 128
    assert {run.config.vocab_size for plan in ladder.plans for run in plan.runs} == {128}
    with pytest.raises(ConfigError, match="drop --vocab-size"):
        make_plan(PlanRequest(target="la-1b", variants="dr", tokenizer="char", vocab_size=1024))


@pytest.mark.parametrize("dtype", ["fp8", "fp16", "int8"])
@pytest.mark.parametrize("command", [["cost", "la-tiny", "--no-measure"], ["cost", "la-tiny"],
                                     ["plan", "--target", "la-tiny", "--variants", "dr", "--no-measure", "--dry-run"],
                                     ["plan", "--target", "la-tiny", "--variants", "dr", "--dry-run"]])
def test_every_command_accepts_the_same_activation_dtypes(command, dtype, capsys):
    """fp8/fp16 activations were accepted by `plan --no-measure` and `cost --no-measure` and refused by the
    measured check: one list, checked in one place."""
    assert main([*command, "--activation-dtype", dtype]) == 2
    message = " ".join(capsys.readouterr().err.split())
    assert f"activation_dtype (--activation-dtype) must be one of bf16, fp32, the dtypes training runs in; got " \
           f"'{dtype}'" in message
    if "--no-measure" in command:
        assert main([*command, "--activation-dtype", "fp32"]) == 0


PLAN_REQUESTS = [
    ["--target", "la-tiny"], ["--target", "la-tiny", "--tolerance", "0.2"], ["--target", "la-tiny", "--tokens", "100"],
    ["--target", "la-tiny", "--batch", "3"], ["--target", "la-tiny", "--batch", "8", "--micro-batch", "2"],
    ["--target", "la-tiny", "--seeds", "0,1"], ["--target", "la-tiny", "--match", "flops"],
    ["--target", "la-tiny", "--match", "inference_memory_bytes", "--inference-context", "4096",
     "--inference-batch", "4"],
    ["--target", "la-tiny", "--max-memory-ratio", "1.5"], ["--target", "la-tiny", "--vocab-size", "300"],
    ["--target", "la-tiny", "--set", "router_rank=8"], ["--target", "la-tiny", "--set", "mixture=parallel"],
    ["--target", "la-tiny", "--set", "train.data=math", "--set", "train.loss_on=answers"],
    ["--target", "la-tiny", "--set", "train.data=missing.bin"], ["--target", "la-tiny", "--set", "train.data=latent"],
    ["--target", "la-tiny", "--set", "train.eval_data=missing.jsonl"], ["--target", "la-tiny", "--seq-len", "16"],
    ["--target", "la-tiny", "--set", "train.total_tokens=1"], ["--target", "la-tiny", "--tokenizer", "char"],
    ["--params", "2e6", "--base", "la-tiny"], ["--target", "dr-tiny", "--variants", "la"],
    ["--target", "la-tiny", "--top-k", "1"], ["--target", "la-tiny", "--da-heads", "2"],
]


@pytest.mark.parametrize("request_args", PLAN_REQUESTS, ids=lambda args: " ".join(args[1:]))
def test_whatever_plan_writes_validates(request_args, tmp_path, capsys):
    """plan exited 0 writing sweeps that `sweep validate` refused (data or eval files that do not exist):
    a plan either writes a sweep that validates, or refuses with exit 2 and writes nothing, its dry run
    alike."""
    out = tmp_path / "s.yaml"
    dry = main(["plan", *request_args, "--no-measure", "--dry-run", "--out", str(out)])
    code = main(["plan", *request_args, "--no-measure", "--out", str(out)])
    capsys.readouterr()
    assert code == dry and code in (0, 2)
    if code == 2:
        assert not out.exists()
        return
    assert main(["sweep", "validate", str(out)]) == 0, capsys.readouterr().err


def test_a_plan_whose_data_is_missing_is_not_written(tmp_path, capsys):
    out = tmp_path / "s.yaml"
    assert main(["plan", "--target", "la-tiny", "--set", "train.data=missing.bin", "--out", str(out),
                 "--no-measure"]) == 2
    message = " ".join(capsys.readouterr().err.split())
    assert "not written: the sweep would not pass `matcher sweep validate`, 1 problem(s)" in message
    assert "missing.bin: no such data file" in message and not out.exists()
