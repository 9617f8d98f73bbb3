"""python -m rlhf <command> [options]; `python -m rlhf <command> --help` explains every option."""

import argparse
import json
import sys

from . import config as configs
from .data import DataError

COMMANDS = {
    "sample": (configs.SampleConfig, "rlhf.sampling:sample_file"),
    "train-sft": (configs.SFTConfig, "rlhf.train_sft:train_sft"),
    "eval-sft": (configs.EvalSFTConfig, "rlhf.train_sft:eval_sft"),
    "train-rm": (configs.RewardConfig, "rlhf.train_reward:train_reward"),
    "eval-rm": (configs.EvalRewardConfig, "rlhf.train_reward:eval_reward"),
    "train-ppo": (configs.PPOConfig, "rlhf.train_ppo:train_ppo"),
    "eval-policy": (configs.EvalPolicyConfig, "rlhf.train_ppo:eval_policy"),
    "serve": (configs.ServeConfig, "rlhf.serve:serve"),
    "merge": (configs.MergeConfig, "rlhf.adapters:merge"),
    "prepare-model": (configs.PrepareModelConfig, "rlhf.prepare:prepare_model"),
}


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m rlhf", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True, metavar="command")
    for name, (config_class, _) in COMMANDS.items():
        summary = config_class.__doc__.strip().splitlines()[0]
        configs.parser_for(config_class, commands.add_parser(name, help=summary, description=config_class.__doc__))
    args = parser.parse_args(argv)
    config_class, target = COMMANDS[args.command]
    config = configs.from_args(config_class, args)
    module, function = target.split(":")
    run = getattr(__import__(module, fromlist=[function]), function)
    try:
        result = run(config)
    except (DataError, FileNotFoundError, ValueError) as exc:
        sys.exit(f"{args.command}: {exc}")
    if isinstance(result, dict) and result:
        print(json.dumps(result, indent=2, default=str))
    elif result and not isinstance(result, dict):
        print(result)
