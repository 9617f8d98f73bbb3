"""rlhf/ stands alone: no Django, nothing of the site; its config comes from flags or a YAML file."""

import ast
import subprocess
import sys
from pathlib import Path

import pytest

from rlhf import config as configs

PACKAGE = Path(__file__).resolve().parents[2] / "rlhf"


def test_no_module_imports_django_or_the_site():
    for path in PACKAGE.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else (
                [node.module or ""] if isinstance(node, ast.ImportFrom) and node.level == 0 else [])
            for name in names:
                assert name.split(".")[0] not in ("django", "labeling", "config", "rest_framework", "celery"), (
                    f"{path.name} imports {name}")


def test_importing_every_module_loads_no_django():
    modules = ", ".join(f"rlhf.{p.stem}" for p in PACKAGE.glob("*.py") if p.stem != "__main__")
    code = f"import sys, {modules}; print(sorted(m for m in sys.modules if m.split('.')[0] in ('django', 'labeling')))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=PACKAGE.parent)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"


def parse(command_args, config_class):
    parser = configs.parser_for(config_class)
    return configs.from_args(config_class, parser.parse_args(command_args))


def test_flags_override_the_yaml_file_which_overrides_defaults(tmp_path):
    yaml_file = tmp_path / "rm.yaml"
    yaml_file.write_text("data: train.jsonl\noutput: out\nlr: 0.001\nepochs: 3\nbetas: [0.8, 0.9]\n")
    config = parse(["--config", str(yaml_file), "--epochs", "5", "--resume"], configs.RewardConfig)
    assert (config.lr, config.epochs, config.betas, config.resume, config.margin) == (0.001, 5, (0.8, 0.9), True, 0.0)


def test_an_unknown_yaml_option_or_a_missing_required_one_stops_with_its_name(tmp_path):
    yaml_file = tmp_path / "rm.yaml"
    yaml_file.write_text("data: train.jsonl\noutput: out\nlearning_rate: 0.1\n")
    with pytest.raises(SystemExit, match=r"unknown option 'learning_rate'.* \(in .*rm.yaml or the command line\)"):
        parse(["--config", str(yaml_file)], configs.RewardConfig)
    with pytest.raises(SystemExit, match="Missing required options: --output"):
        parse(["--data", "x.jsonl"], configs.RewardConfig)


@pytest.mark.parametrize("values, message", [
    ({"epoch": 2}, "unknown option 'epoch'; did you mean 'epochs'?"),
    ({"zzz": 1}, "unknown option 'zzz'; the options are: batch_size, betas,"),
    ({"data": "/etc/passwd"}, "option 'data' is set for each run and cannot be given"),
    ({"epochs": "2"}, "option 'epochs' must be a whole number, not '2'"),
    ({"epochs": 2.5}, "option 'epochs' must be a whole number, not 2.5"),
    ({"epochs": True}, "option 'epochs' must be a whole number, not True"),
    ({"epochs": -1}, "option 'epochs' must be at least 0, not -1"),
    ({"epochs": 0, "fit_head": False}, "options 'epochs' 0 and 'fit_head' false leave nothing to train"),
    ({"lr": -1e-5}, "option 'lr' must be at least 0, not -1e-05"),
    ({"lr": float("nan")}, "option 'lr' must be a finite number, not nan"),
    ({"lr": None}, "option 'lr' must be a number, not None"),
    ({"resume": "yes"}, "option 'resume' must be true or false, not 'yes'"),
    ({"dtype": "float8"}, "option 'dtype' must be one of float32, bfloat16, float16, not 'float8'"),
    ({"device": "cuda; rm -rf /"}, "option 'device' must match"),
    ({"betas": [0.9]}, "option 'betas' must be a pair of numbers, not [0.9]"),
    ({"betas": [0.9, 1.5]}, "option 'betas' must be two numbers from 0 up to (not including) 1"),
    ({"max_length": 4}, "option 'max_length' must be at least 8, not 4"),
    (["epochs"], "options must be a mapping of option names to values"),
])
def test_options_are_checked_by_name_type_and_range_before_anything_runs(values, message):
    with pytest.raises(configs.OptionError) as caught:
        configs.check_options(configs.RewardConfig, values, reserved={"data", "output"})
    assert str(caught.value).startswith(message)


def test_checked_options_keep_their_values_with_floats_and_pairs_as_their_types():
    checked = configs.check_options(configs.PPOConfig, {"lr": 1, "betas": [0.8, 0.9], "no_eos_penalty": -2,
                                                        "device": "cuda:1", "steps": 3})
    assert checked == {"lr": 1.0, "betas": (0.8, 0.9), "no_eos_penalty": -2.0, "device": "cuda:1", "steps": 3}
    assert isinstance(checked["lr"], float)


def test_an_ill_typed_yaml_option_stops_with_its_name(tmp_path):
    yaml_file = tmp_path / "rm.yaml"
    yaml_file.write_text("data: train.jsonl\noutput: out\nbatch_size: many\n")
    with pytest.raises(SystemExit, match="option 'batch_size' must be a whole number, not 'many'"):
        parse(["--config", str(yaml_file)], configs.RewardConfig)
    with pytest.raises(SystemExit, match="option 'epochs' must be at least 1, not 0"):
        parse(["--data", "x", "--output", "y", "--epochs", "0"], configs.SFTConfig)
    with pytest.raises(SystemExit, match="options 'epochs' 0 and 'fit_head' false leave nothing to train"):
        parse(["--data", "x", "--output", "y", "--epochs", "0", "--no-fit-head"], configs.RewardConfig)


def test_every_option_is_explained_in_help():
    for name in ("sample", "train-sft", "train-rm", "eval-rm", "serve", "prepare-model"):
        out = subprocess.run([sys.executable, "-m", "rlhf", name, "--help"], capture_output=True, text=True,
                             cwd=PACKAGE.parent)
        assert out.returncode == 0, out.stderr
        assert "--config YAML" in out.stdout
    for config_class in (configs.SampleConfig, configs.SFTConfig, configs.RewardConfig, configs.EvalRewardConfig,
                         configs.ServeConfig, configs.PrepareModelConfig, configs.MergeConfig):
        for field in config_class.__dataclass_fields__.values():
            assert field.metadata.get("help"), f"{config_class.__name__}.{field.name} has no help"


def test_the_tiny_model_prepares_and_loads(tmp_path):
    out = subprocess.run([sys.executable, "-m", "rlhf", "prepare-model", "--tiny", "--output", str(tmp_path / "m")],
                         capture_output=True, text=True, cwd=PACKAGE.parent)
    assert out.returncode == 0, out.stderr
    from rlhf.models import load_policy, load_tokenizer

    assert load_policy(tmp_path / "m").num_parameters() < 1_000_000 and len(load_tokenizer(tmp_path / "m")) == 512


def test_an_option_error_quotes_a_huge_value_or_name_cut_short():
    for values in ({"epochs": "y" * 100_000}, {"x" * 100_000: 1}):
        with pytest.raises(configs.OptionError) as caught:
            configs.check_options(configs.RewardConfig, values)
        listed = len(", ".join(configs.RewardConfig.__dataclass_fields__))  # the options, named when none is close
        assert len(str(caught.value)) < 150 + listed and "…" in str(caught.value)
