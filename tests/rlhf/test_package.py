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
    with pytest.raises(SystemExit, match=r"unknown options \['learning_rate'\]"):
        parse(["--config", str(yaml_file)], configs.RewardConfig)
    with pytest.raises(SystemExit, match="Missing required options: --output"):
        parse(["--data", "x.jsonl"], configs.RewardConfig)


def test_every_option_is_explained_in_help():
    for name in ("sample", "train-sft", "train-rm", "eval-rm", "serve", "prepare-model"):
        out = subprocess.run([sys.executable, "-m", "rlhf", name, "--help"], capture_output=True, text=True,
                             cwd=PACKAGE.parent)
        assert out.returncode == 0, out.stderr
        assert "--config YAML" in out.stdout
    for config_class in (configs.SampleConfig, configs.SFTConfig, configs.RewardConfig, configs.EvalRewardConfig,
                         configs.ServeConfig, configs.PrepareModelConfig):
        for field in config_class.__dataclass_fields__.values():
            assert field.metadata.get("help"), f"{config_class.__name__}.{field.name} has no help"


def test_the_tiny_model_prepares_and_loads(tmp_path):
    out = subprocess.run([sys.executable, "-m", "rlhf", "prepare-model", "--tiny", "--output", str(tmp_path / "m")],
                         capture_output=True, text=True, cwd=PACKAGE.parent)
    assert out.returncode == 0, out.stderr
    from rlhf.models import load_policy, load_tokenizer

    assert load_policy(tmp_path / "m").num_parameters() < 1_000_000 and len(load_tokenizer(tmp_path / "m")) == 512
