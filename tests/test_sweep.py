"""Sweep files: round trip, validation of every field with its path, atomic no-overwrite writes."""

import dataclasses
import shlex
from pathlib import Path

import pytest
import yaml

from matcher.cli import main
from matcher.config import TrainConfig
from matcher.cost.analytic import Conventions
from matcher.errors import ConfigError, MatcherError
from matcher.plan.presets import get_preset
from matcher.plan.sweep import Run, Sweep, SweepMeta, load_sweep, predict, write_sweep


def make_sweep() -> Sweep:
    conv = Conventions()
    train = TrainConfig(total_tokens=4096, batch_size=2, seq_len=32, data_steps=1)  # eval chains fit 32
    runs = []
    for role, name in (("target", "la-tiny"), ("variant", "dr-tiny"), ("variant", "dr_da-tiny")):
        model = dataclasses.replace(get_preset(name), seq_len=train.seq_len)
        runs.append(Run(name=model.variant, group=model.variant, role=role, model=model, train=train,
                        predicted=predict(model, train, conv)))
    meta = SweepMeta(target="la-tiny", variants=["dr", "dr_da"], matched=["flops", "params"],
                     conventions=conv.to_dict(), tool_version="0.1.0", command="matcher plan --target la-tiny",
                     created="2026-01-01T00:00:00+00:00",
                     tolerance=0.05)  # the presets were matched at seq_len 128, this sweep trains at 32
    return Sweep(meta=meta, runs=runs)


def test_round_trip(tmp_path):
    sweep = make_sweep()
    path = write_sweep(sweep, tmp_path / "s.yaml")
    loaded = load_sweep(path)
    assert loaded.name == "s"
    assert [r.model for r in loaded.runs] == [r.model for r in sweep.runs]
    assert [r.predicted for r in loaded.runs] == [r.predicted for r in sweep.runs]
    assert loaded.target.name == "la"


def test_paths_in_a_sweep_are_relative_to_the_sweep_file(tmp_path, monkeypatch, capsys):
    import dataclasses

    (tmp_path / "evalset.jsonl").write_text('{"question": "1+1?", "answer": "#### 2"}\n')
    monkeypatch.chdir(tmp_path)
    sweep = make_sweep()
    sweep.runs = [dataclasses.replace(r, train=dataclasses.replace(r.train, eval_data="evalset.jsonl"))
                  for r in sweep.runs]
    path = write_sweep(sweep, Path("sweeps") / "s.yaml")  # the path as given from the current directory...
    assert "eval_data: ../evalset.jsonl" in path.read_text()  # ...written relative to the sweep file
    elsewhere = tmp_path / "a" / "b"
    elsewhere.mkdir(parents=True)
    monkeypatch.chdir(elsewhere)
    loaded = load_sweep(tmp_path / "sweeps" / "s.yaml")  # found from any directory
    assert Path(loaded.runs[0].train.eval_data) == tmp_path / "evalset.jsonl"
    assert "note:" not in capsys.readouterr().err

    monkeypatch.chdir(tmp_path)  # an older sweep: the path was written from the current directory
    old = tmp_path / "sweeps" / "old.yaml"
    old.write_text(path.read_text().replace("eval_data: ../evalset.jsonl", "eval_data: evalset.jsonl"))
    assert load_sweep(Path("sweeps") / "old.yaml").runs[0].train.eval_data == "evalset.jsonl"
    message = " ".join(capsys.readouterr().err.split())
    assert "evalset.jsonl found from the current directory, not beside the sweep file" in message
    assert "(e.g. ../evalset.jsonl)" in message


def test_never_overwrites_without_force(tmp_path):
    path = write_sweep(make_sweep(), tmp_path / "s.yaml")
    before = path.read_text()
    with pytest.raises(MatcherError, match="exists; pass --force"):
        write_sweep(make_sweep(), path)
    assert path.read_text() == before
    write_sweep(make_sweep(), path, force=True)
    assert list(tmp_path.iterdir()) == [path]  # no temporary file left behind


def _edited(tmp_path, edit):
    data = make_sweep().to_dict()
    edit(data)
    path = tmp_path / "edited.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


@pytest.mark.parametrize(
    "edit, message",
    [
        (lambda d: d["runs"][1]["model"].update(d_modle=3),
         "runs[1].model.d_modle: unknown field (did you mean 'd_model'?)"),
        (lambda d: d["runs"][2]["train"].update(lr="fast"), "runs[2].train.lr: must be float, got 'fast'"),
        (lambda d: d["runs"][0]["model"].pop("d_ff"), "runs[0].model.d_ff: missing (required)"),
        (lambda d: d["runs"][0].update(rol="target"), "runs[0].rol: unknown field (did you mean 'role'?)"),
        (lambda d: d["meta"].pop("target"), "meta.target: missing (required)"),
        (lambda d: d["runs"][1]["model"].update(top_k=99), "runs[1].model: top_k must be between 1 and n_experts"),
        (lambda d: d["runs"][1].update(name="la"), "run name 'la' appears more than once"),
        (lambda d: d["runs"][0].update(role="variant"), "no run has role: target"),
        (lambda d: d["runs"][1]["model"].update(d_ff=128),
         "runs[1] (dr): no longer matched to the target la: flops +"),
        (lambda d: d["runs"][1].update(role="target"), "runs of several groups have role: target (dr, la)"),
        (lambda d: d["runs"][2]["train"].update(data="missing.bin"), "missing.bin: no such data file"),
        (lambda d: d["runs"][0]["train"].update(eval_data="gsm.jsonl"), "gsm.jsonl: no such eval"),
        (lambda d: (d["runs"][1]["train"].update(batch_size=4), d["runs"][1].pop("predicted")),
         "tokens per step (batch_size x seq_len) differ"),
        (lambda d: d.update(matcher_sweep=7), "matcher_sweep: must be 1"),
        (lambda d: d["runs"][1]["model"].update(seq_len=128),
         "runs[1].model.seq_len: 128 differs from runs[1].train.seq_len 32; the model's context and the training "
         "one are one setting"),
    ],
)
def test_bad_sweeps_name_the_key(tmp_path, edit, message):
    path = _edited(tmp_path, edit)
    with pytest.raises(ConfigError) as err:
        load_sweep(path)
    assert message in str(err.value)


def test_every_problem_is_reported_at_once(tmp_path):
    def edit(d):
        d["runs"][0]["model"]["d_modle"] = 1
        d["runs"][2]["train"]["lr"] = "x"

    with pytest.raises(ConfigError) as err:
        load_sweep(_edited(tmp_path, edit))
    assert "2 problem(s)" in str(err.value)


def test_missing_predicted_is_recomputed(tmp_path):
    path = _edited(tmp_path, lambda d: d["runs"][1].pop("predicted"))
    sweep = load_sweep(path)
    assert sweep.runs[1].predicted == make_sweep().runs[1].predicted


def test_validate_and_show_commands(tmp_path, capsys):
    path = write_sweep(make_sweep(), tmp_path / "s.yaml")
    assert main(["sweep", "validate", str(path)]) == 0
    assert "ok" in capsys.readouterr().out
    assert main(["sweep", "show", str(path)]) == 0
    shown = capsys.readouterr().out
    assert "dr_da" in shown and "la-tiny" in shown
    bad = _edited(tmp_path, lambda d: d["runs"][1]["model"].update(n_expert=3))
    assert main(["sweep", "validate", str(bad)]) == 2
    captured = capsys.readouterr()
    assert "runs[1].model.n_expert: unknown field (did you mean 'n_experts'?)" in captured.err
    assert "Traceback" not in captured.err


def test_validate_accepts_the_latent_math_stream(tmp_path, capsys):
    def latent(data):
        for run in data["runs"]:
            run["train"].update(data="math-latent", eval_data="math-latent")

    assert main(["sweep", "validate", str(_edited(tmp_path, latent))]) == 0
    assert "ok" in capsys.readouterr().out


COMMITTED = sorted((Path(__file__).resolve().parents[1] / "sweeps").glob("*.yaml"))


@pytest.mark.parametrize("path", COMMITTED, ids=[p.name for p in COMMITTED])
def test_committed_sweeps_validate_and_their_predictions_are_current(path):
    """The example sweeps under sweeps/ stay valid as the cost model changes (load_sweep re-predicts)."""
    from matcher.plan.planner import make_plan
    from matcher.plan.request import PlanRequest

    sweep = load_sweep(path)
    target = sweep.runs[0]
    assert target.role == "target" and target.name == sweep.meta.target
    # re-planned today, the same configs come out
    plan = make_plan(PlanRequest(target=sweep.meta.target, variants=",".join(sweep.meta.variants)))
    assert [r.config for r in plan.runs] == [r.model for r in sweep.runs]


def test_there_are_committed_example_sweeps():
    assert len(COMMITTED) >= 2


def test_a_missing_sweep_lists_the_sweeps_there_or_says_how_to_write_one(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert main(["run", "sweeps/x.yaml"]) == 2
    assert "write one with `matcher plan --target" in capsys.readouterr().err
    (tmp_path / "sweeps").mkdir()
    (tmp_path / "sweeps" / "la-1b-vs-dr.yaml").write_text("{}\n")
    assert main(["sweep", "validate", "sweeps/x.yaml"]) == 2
    assert "sweeps in sweeps: sweeps/la-1b-vs-dr.yaml" in capsys.readouterr().err
    assert main(["cost", "nowhere.yaml", "--no-measure"]) == 2
    assert "give a preset name" in capsys.readouterr().err


def test_execution_settings_may_be_edited_and_predictions_follow(tmp_path):
    """The README's promise: micro_batch_size and recompute may change between attempts; the stored
    predictions are recomputed, not trusted and not an error."""
    def edit(d):
        for run in d["runs"]:
            run["train"].update(micro_batch_size=1, recompute="full")

    sweep = load_sweep(_edited(tmp_path, edit))
    before = make_sweep()
    for run, old in zip(sweep.runs, before.runs):
        assert run.predicted == predict(run.model, run.train, Conventions())
        assert run.predicted["train_memory_bytes"] < old.predicted["train_memory_bytes"]


def test_data_outside_the_vocabulary_is_found_before_training(tmp_path, monkeypatch):
    import numpy as np

    from matcher.data import shards

    monkeypatch.chdir(tmp_path)
    shards.write_shard(tmp_path / "bpe.bin", np.arange(5000) % 300)
    path = _edited(tmp_path, lambda d: d["runs"][1]["train"].update(data="bpe.bin"))
    with pytest.raises(ConfigError, match="runs\\[1\\].train \\(dr\\): bpe.bin: token 128 at position 128 is outside"):
        load_sweep(path)


def test_a_planned_sweep_with_a_held_variable_validates(tmp_path):
    """--set n_experts holds one free variable: params is then only reported, not matched, and
    validation checks what the search matched, not everything --match named."""
    from matcher.plan.planner import build_sweep, make_plan
    from matcher.plan.request import PlanRequest

    plan = make_plan(PlanRequest(target="la-tiny", variants="dr", set_fields=["n_experts=4"]))
    path = write_sweep(build_sweep(plan), tmp_path / "held.yaml")
    sweep = load_sweep(path)
    assert sweep.meta.solved == {"dr": ["flops"]}


def test_memory_matched_sweeps_take_a_micro_batch_edit(tmp_path):
    from matcher.plan.planner import build_sweep, make_plan
    from matcher.plan.request import PlanRequest

    plan = make_plan(PlanRequest(target="la-tiny", variants="dr", match="flops,memory", tolerance=0.05))
    data = build_sweep(plan).to_dict()
    for run in data["runs"]:
        run["train"]["micro_batch_size"] = 1
    path = tmp_path / "mem.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    assert load_sweep(path).runs[1].train.micro_batch_size == 1


def test_shards_of_another_tokenizer_are_found_before_training(tmp_path, monkeypatch):
    import numpy as np

    from matcher.data import shards

    monkeypatch.chdir(tmp_path)
    shards.write_shard(tmp_path / "bpe.bin", np.arange(5000) % 300)

    def edit(d):
        d["runs"][2]["train"]["data"] = "bpe.bin"
        d["runs"][2]["model"]["vocab_size"] = 512

    with pytest.raises(ConfigError,
                       match="runs\\[2\\].train \\(dr_da\\): bpe.bin: the shards hold token ids up to 299"):
        load_sweep(_edited(tmp_path, edit))


def test_inference_memory_is_recorded_and_an_edit_that_unmatches_it_is_refused(tmp_path):
    from matcher.plan.planner import build_sweep, make_plan
    from matcher.plan.request import PlanRequest

    plan = make_plan(PlanRequest(target="la-1b", variants="dr_da", depth=16, inference_batch=2))
    data = build_sweep(plan).to_dict()
    meta = data["meta"]
    assert meta["matched"] == ["flops", "params", "inference_memory_bytes"]
    assert (meta["inference_batch"], meta["inference_context"]) == (2, 2048)
    assert "inference memory: 2 x 2048 tokens" in meta["description"]
    path = tmp_path / "ok.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    assert load_sweep(path).meta.inference_batch == 2
    # back to the target's 4 KV heads: the SA KV cache halves, inference memory drops by ~3.5% (parameters by 0.03%)
    assert data["runs"][1]["model"]["n_kv_heads"] == 8
    data["runs"][1]["model"]["n_kv_heads"] = 4
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    with pytest.raises(ConfigError, match=r"no longer matched to the target la-1b: .*inference_memory_bytes -3\.\d+%"):
        load_sweep(path)


def test_a_sweep_with_old_names_loads_with_one_notice(tmp_path, capsys):
    """Sweeps written before a quantity had one name (meta.matched inference_memory, predicted
    training_memory_bytes) load under the current names, with one notice naming what to rename."""
    from matcher.plan.planner import build_sweep, make_plan
    from matcher.plan.request import PlanRequest

    path = write_sweep(build_sweep(make_plan(PlanRequest(target="la-1b", variants="dr"))), tmp_path / "s.yaml")
    current = load_sweep(path)
    assert "note:" not in capsys.readouterr().err
    path.write_text(path.read_text().replace("inference_memory_bytes\n", "inference_memory\n")
                    .replace("train_memory_bytes:", "training_memory_bytes:"))
    assert "- inference_memory\n" in path.read_text() and "training_memory_bytes:" in path.read_text()
    old = load_sweep(path)
    assert old.meta.matched == current.meta.matched == ["flops", "params", "inference_memory_bytes"]
    assert old.meta.solved == current.meta.solved and old.runs[1].predicted == current.runs[1].predicted
    message = " ".join(capsys.readouterr().err.split())
    assert message.count("note:") == 1
    assert "inference_memory -> inference_memory_bytes" in message
    assert "training_memory_bytes -> train_memory_bytes" in message and "rename them in the file" in message


COMMITTED_SWEEPS = sorted((Path(__file__).resolve().parents[1] / "sweeps").glob("*.yaml"))


@pytest.mark.parametrize("committed", COMMITTED_SWEEPS, ids=lambda path: path.name)
def test_committed_sweeps_are_what_their_command_writes_now(committed, tmp_path, monkeypatch):
    """sweeps/*.yaml are what `meta.command` writes today (names, fields, matched configs, costs): after a
    change to the planner or to a name, write them again with that command."""
    data = yaml.safe_load(committed.read_text())
    command = shlex.split(data["meta"]["command"])
    assert command[:2] == ["matcher", "plan"]
    monkeypatch.chdir(tmp_path)
    assert main([*command[1:], "--no-measure", "--out", str(tmp_path / committed.name)]) == 0
    fresh = yaml.safe_load((tmp_path / committed.name).read_text())
    for sweep in (data, fresh):
        del sweep["meta"]["created"], sweep["meta"]["command"]
    assert fresh == data


def test_recorded_costs_take_known_ones_only_where_computed_at_the_same_settings():
    """A planned run's recorded costs reuse its match's (matcher.plan.costs.compute); one computed at another
    batch or context, or a cost the match does not carry, is computed fresh."""
    from matcher.plan.costs import Computed
    from matcher.plan.search import QUANTITIES, MatchSpec, costs_of

    model, conv = get_preset("dr_da-tiny"), Conventions()
    train = TrainConfig(total_tokens=4096, batch_size=4, micro_batch_size=2, seq_len=model.seq_len)
    fresh = predict(model, train, conv)
    matched_at = MatchSpec(conventions=conv, batch=2, inference_batch=8)
    carried = costs_of(model, matched_at)
    assert predict(model, train, conv, Computed(carried, matched_at)) == fresh
    marked = Computed({q: 7.0 for q in QUANTITIES}, matched_at)  # values that show where they were taken
    assert predict(model, train, conv, marked) == {
        **fresh, "train_flops_per_token": 7, "total_params": 7, "train_memory_bytes": 7, "body_params": 7,
        "body_train_flops_per_token": 7}
    other_batch = Computed({q: 7.0 for q in QUANTITIES}, dataclasses.replace(matched_at, batch=4))
    assert predict(model, train, conv, other_batch)["train_memory_bytes"] == fresh["train_memory_bytes"]
