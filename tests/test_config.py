"""Config validation, YAML round trips and forgiving preset names."""

import pytest

from matcher.config import ModelConfig, TrainConfig, dump_yaml, load_model_config
from matcher.errors import ConfigError
from matcher.names import normalise
from matcher.plan.presets import PRESETS, get_preset, load_target, resolve_preset


def tiny(**changes):
    base = dict(vocab_size=128, d_model=64, depth=4, n_heads=4, seq_len=32, d_ff=64, n_experts=4, top_k=2)
    return ModelConfig(**{**base, **changes})


@pytest.mark.parametrize("name", list(PRESETS))
def test_every_preset_round_trips_through_yaml(name, tmp_path):
    cfg = get_preset(name)
    path = tmp_path / "model.yaml"
    path.write_text(dump_yaml(cfg.to_dict()))
    assert load_model_config(path) == cfg
    path.write_text(dump_yaml({"model": cfg.to_dict()}))
    assert load_model_config(path) == cfg


def test_derived_defaults():
    cfg = tiny()
    assert (cfg.n_kv_heads, cfg.head_dim, cfg.da_head_dim) == (4, 16, 16)
    assert tiny(variant="la").n_unique_layers == 4 and tiny(variant="dr").n_unique_layers == 1


@pytest.mark.parametrize(
    "changes, message",
    [
        (dict(variant="rnn"), "variant must be one of la, dr, dr_da, got 'rnn'"),
        (dict(d_model=0), "d_model must be a positive integer, got 0"),
        (dict(depth=-3), "depth must be a positive integer, got -3"),
        (dict(top_k=5), "top_k must be between 1 and n_experts (4), got 5"),
        (dict(n_heads=6, n_kv_heads=4, head_dim=16), "n_heads (6) must be a multiple of n_kv_heads (4)"),
        (dict(head_dim=15), "head_dim must be even for rotary"),
        (dict(n_heads=3, n_kv_heads=1), "d_model (64) is not a multiple of n_heads (3)"),
        (dict(n_experts=0), "top_k is 2 but n_experts is 0 (a dense MLP): set top_k: 0"),
        (dict(mlp_act="relu"), "mlp_act must be one of swiglu, gelu"),
        (dict(mixture="mixed"), "mixture must be one of sequential, parallel"),
        (dict(d_ff=64.0), "d_ff must be int, got 64.0"),
        (dict(tie_embeddings="yes"), "tie_embeddings must be bool, got 'yes'"),
        (dict(depth=True), "depth must be int, got True"),
        (dict(variant="dr_da", da_head_dim=7), "da_head_dim must be even when da_rope is on"),
        (dict(variant="dr_da", da_rope="backward"), "da_rope must be one of none, forward, forward_reversed"),
        (dict(da_rope=True), "da_rope must be str, got True"),
    ],
)
def test_bad_values_are_rejected_with_a_clear_message(changes, message):
    with pytest.raises(ConfigError) as err:
        tiny(**changes)
    assert message in str(err.value)


@pytest.mark.parametrize(
    "text, message",
    [
        ("vocab_size: 128\nd_modle: 64\n", "d_modle: unknown field (did you mean 'd_model'?)"),
        ("vocab_size: 128\nd_model: 64\n",
         [f"{name}: missing (required)" for name in ("depth", "n_heads", "seq_len", "d_ff")]),
        ("- 1\n- 2\n", "expected a mapping of field: value, got list"),
        ("vocab_size: 128\nd_model: 64: 3\n", "line 2, column"),
        ("vocab_size: 128\nd_model: '64'\ndepth: 2\nn_heads: 4\nseq_len: 8\nd_ff: 8\n",
         "d_model: must be int, got '64'"),
    ],
)
def test_bad_config_files_give_one_clear_error(tmp_path, text, message):
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError) as err:
        load_model_config(path)
    for part in [message] if isinstance(message, str) else message:
        assert part in str(err.value)
    assert str(path) in str(err.value)


def test_missing_config_file():
    with pytest.raises(ConfigError, match="no such file"):
        load_target("nowhere/model.yaml")


@pytest.mark.parametrize(
    "typed, canonical, notice",
    [
        ("la-1b", "la-1b", False),
        ("LA-1B", "la-1b", True),
        ("la_1b", "la-1b", True),
        ("dr-da-2b", "dr_da-2b", True),
        ("dr_dа-2b", "dr_da-2b", True),  # Cyrillic а
        ("lа–tiny", "la-tiny", True),  # Cyrillic а, en dash
        ("ＬＡ-２Ｂ", "la-2b", True),  # fullwidth
    ],
)
def test_preset_names_are_resolved_forgivingly(typed, canonical, notice):
    resolved = resolve_preset(typed)
    assert resolved.name == canonical
    assert (resolved.notice is not None) == notice
    if notice:
        assert canonical in resolved.notice


def test_unknown_preset_lists_the_closest():
    with pytest.raises(ConfigError) as err:
        resolve_preset("la-3b")
    assert "closest: la-2b, la-1b" in str(err.value)


def test_normalise_is_idempotent():
    for name in PRESETS:
        assert normalise(normalise(name)) == normalise(name)


def test_train_config_validation():
    ok = TrainConfig(total_tokens=1000, batch_size=2, seq_len=16)
    assert ok.tokens_per_step == 32 and ok.total_steps == 31
    with pytest.raises(ConfigError, match="warmup_fraction \\+ decay_fraction must be at most 1"):
        TrainConfig(total_tokens=1000, batch_size=2, seq_len=16, warmup_fraction=0.6, decay_fraction=0.6)
    with pytest.raises(ConfigError, match="eval_tokens must be positive and strictly increasing"):
        TrainConfig(total_tokens=1000, batch_size=2, seq_len=16, eval_tokens=[10, 5])
    with pytest.raises(ConfigError, match="micro_batch_size must be between 0 \\(no accumulation\\) and batch_size 2"):
        TrainConfig(total_tokens=1000, batch_size=2, seq_len=16, micro_batch_size=4)


@pytest.mark.parametrize("legacy, today", [(True, "forward"), (False, "none")])
def test_a_bool_da_rope_of_an_older_file_loads_with_a_note(legacy, today, tmp_path, capsys):
    from matcher.config import _note_once

    _note_once.cache_clear()
    path = tmp_path / "model.yaml"
    path.write_text(dump_yaml({**tiny(variant="dr_da").to_dict(), "da_rope": legacy}))
    assert load_model_config(path) == tiny(variant="dr_da", da_rope=today)
    note = " ".join(capsys.readouterr().err.split())
    assert f"da_rope: {str(legacy).lower()} (a file from before da_rope took none | forward | forward_reversed) " \
           f"is read as da_rope: {today}" in note
    load_model_config(path)
    assert capsys.readouterr().err == ""  # once per process, however many runs repeat it


def test_lr_mult_defaults_to_one_per_group_and_fills_missing_groups():
    base = dict(total_tokens=4096, batch_size=8, seq_len=16)
    assert TrainConfig(**base).lr_mult == {"shared_block": 1.0, "experts": 1.0, "embeddings": 1.0}
    given = TrainConfig.from_dict({**base, "lr_mult": {"experts": 0.5}})
    assert given.lr_mult == {"shared_block": 1.0, "experts": 0.5, "embeddings": 1.0}
    assert TrainConfig.from_dict(given.to_dict()) == given


@pytest.mark.parametrize(("lr_mult", "message"), [
    ({"expert": 0.5}, "lr_mult.expert: unknown field (did you mean 'experts'?)"),
    ({"experts": 0}, "lr_mult.experts must be a positive number (the group's LR is lr times it), got 0"),
    ({"embeddings": -1.0}, "lr_mult.embeddings must be a positive number"),
    ({"shared_block": float("inf")}, "lr_mult.shared_block must be a positive number"),
    ({"shared_block": "0.5"}, "lr_mult.shared_block must be a positive number"),
    ({"shared_block": True}, "lr_mult.shared_block must be a positive number"),
])
def test_bad_lr_mult_is_refused(lr_mult, message):
    with pytest.raises(ConfigError) as err:
        TrainConfig(total_tokens=1000, batch_size=8, seq_len=16, lr_mult=lr_mult)
    assert message in " ".join(str(err.value).split())


@pytest.mark.parametrize(("changes", "message"), [
    (dict(micro_batch_size=3), "micro_batch_size 3 does not divide batch_size 8; use one of 1, 2, 4, 8"),
    (dict(beta1=1.0), "beta1 must be in [0, 1)"),
    (dict(beta2=-0.1), "beta2 must be in [0, 1)"),
    (dict(weight_decay=-0.1), "weight_decay must be >= 0"),
    (dict(grad_clip=-1.0), "grad_clip must be >= 0"),
    (dict(balance_rate=-1e-3), "balance_rate must be >= 0"),
    (dict(lr=float("nan")), "lr must be a finite number"),
    (dict(total_tokens=float("inf")), "total_tokens must be int"),
])
def test_out_of_range_training_settings_are_refused(changes, message):
    with pytest.raises(ConfigError) as err:
        TrainConfig(**{**dict(total_tokens=1000, batch_size=8, seq_len=16), **changes})
    assert message in str(err.value)


def test_a_key_given_twice_is_refused_with_its_line(tmp_path):
    path = tmp_path / "twice.yaml"
    path.write_text("vocab_size: 128\nd_model: 64\ndepth: 2\nn_heads: 4\nseq_len: 8\nd_ff: 8\nd_model: 32\n")
    with pytest.raises(ConfigError, match="line 7, column 1: .*key 'd_model' appears twice"):
        load_model_config(path)


def test_merge_keys_may_be_overridden_and_list_keys_are_one_message(tmp_path):
    from matcher.config import read_yaml

    merged = tmp_path / "merged.yaml"
    merged.write_text("base: &base\n  d_model: 64\n  depth: 2\nmodel:\n  <<: *base\n  d_model: 32\n")
    assert read_yaml(merged)["model"] == {"d_model": 32, "depth": 2}
    odd = tmp_path / "odd.yaml"
    odd.write_text("? [1]\n: 2\n")
    with pytest.raises(ConfigError, match="a mapping key must be a plain value"):
        read_yaml(odd)
