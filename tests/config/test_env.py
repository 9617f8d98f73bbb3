import os
import subprocess
import sys

import pytest
from django.core.exceptions import ImproperlyConfigured

from config.env import env_bool, env_float, env_int, env_list, env_ratios, env_str


@pytest.fixture
def env(monkeypatch):
    def set_(**values):
        for name, value in values.items():
            monkeypatch.setenv(name, value)

    return set_


def test_unset_or_blank_variables_give_the_default(env, monkeypatch):
    monkeypatch.delenv("X_UNSET", raising=False)
    env(X_BLANK="  ")
    assert env_int("X_UNSET", 7) == 7
    assert env_int("X_BLANK", 7) == 7
    assert env_list("X_UNSET", ["a"]) == ["a"]
    assert env_ratios("X_UNSET", (0.8, 0.1, 0.1), count=3) == (0.8, 0.1, 0.1)


def test_it_parses_typed_values(env):
    env(X_INT="42", X_FLOAT="0.25", X_TRUE="yes", X_FALSE="Off", X_LIST="en, fr,,de", X_RATIOS="0.7,0.2,0.1")
    assert env_int("X_INT", 0) == 42
    assert env_float("X_FLOAT", 0.0) == 0.25
    assert env_bool("X_TRUE", False) is True
    assert env_bool("X_FALSE", True) is False
    assert env_list("X_LIST", []) == ["en", "fr", "de"]
    assert env_ratios("X_RATIOS", (), count=3) == (0.7, 0.2, 0.1)


@pytest.mark.parametrize(
    "reader, value, message",
    [
        (lambda: env_int("X_BAD", 1), "ten", "X_BAD must be a whole number; got 'ten'"),
        (lambda: env_int("X_BAD", 1, minimum=1), "0", "X_BAD must be at least 1; got 0"),
        (lambda: env_float("X_BAD", 0.5, maximum=1), "1.5", "X_BAD must be at most 1; got 1.5"),
        (lambda: env_float("X_BAD", 0.5), "half", "X_BAD must be a number; got 'half'"),
        (lambda: env_float("X_BAD", 0.5), "nan", "X_BAD must be a finite number; got 'nan'"),
        (lambda: env_ratios("X_BAD", (), count=3), "nan,0.5,0.5", "add up to 1"),
        (lambda: env_bool("X_BAD", True), "maybe", "X_BAD must be one of true/false"),
        (lambda: env_ratios("X_BAD", (), count=3), "0.5,0.5", "X_BAD must be 3 non-negative numbers that add up to 1"),
        (lambda: env_ratios("X_BAD", (), count=3), "0.5,0.4,0.4", "add up to 1"),
        (lambda: env_ratios("X_BAD", (), count=3), "a,b,c", "X_BAD must be 3 comma-separated numbers"),
    ],
)
def test_it_names_the_variable_and_the_problem(env, reader, value, message):
    env(X_BAD=value)
    with pytest.raises(ImproperlyConfigured, match=message):
        reader()


def test_required_string_must_be_set(monkeypatch):
    monkeypatch.delenv("X_NEEDED", raising=False)
    with pytest.raises(ImproperlyConfigured, match="X_NEEDED must be set"):
        env_str("X_NEEDED", required=True)


def _start(**overrides):
    """Import the settings in a fresh interpreter, as start-up does."""
    environment = {key: value for key, value in os.environ.items() if key not in {"DEBUG", "SECRET_KEY"}}
    environment.update(overrides)
    return subprocess.run(
        [sys.executable, "-c", "import django; django.setup()"],
        env={**environment, "DJANGO_SETTINGS_MODULE": "config.settings"},
        capture_output=True,
        text=True,
    )


def test_start_up_stops_on_a_bad_value_and_names_it():
    result = _start(SECRET_KEY="s", PROMPT_CAP_PER_USER="lots")
    assert result.returncode != 0
    assert "PROMPT_CAP_PER_USER must be a whole number; got 'lots'" in result.stderr


def test_start_up_refuses_a_bad_database_url():
    result = _start(SECRET_KEY="s", DATABASE_URL="nosuchdb://x/y")
    assert result.returncode != 0
    assert "DATABASE_URL" in result.stderr


def test_secret_key_has_no_default_outside_debug():
    assert "SECRET_KEY must be set" in _start().stderr
    assert _start(DEBUG="1").returncode == 0


def test_language_codes_are_compared_in_lower_case():
    check = subprocess.run(
        [sys.executable, "-c", "import django; django.setup(); from django.conf import settings; "
                               "print(settings.PROMPT_LANGUAGES)"],
        env={**os.environ, "SECRET_KEY": "s", "PROMPT_LANGUAGES": "EN,Fr", "DJANGO_SETTINGS_MODULE": "config.settings"},
        capture_output=True, text=True,
    )
    assert check.stdout.strip() == "['en', 'fr']"


@pytest.mark.parametrize("value", ['{"rank_completions": -1}', '{"rank_completions": "lots"}',
                                   '{"rank_completions": NaN}', '{"rank_completions": true}', "[1, 2]"])
def test_start_up_refuses_queue_shares_that_are_not_non_negative_numbers(value):
    result = _start(SECRET_KEY="s", QUEUE_SHARES=value)
    assert result.returncode != 0 and "ImproperlyConfigured: QUEUE_SHARES must" in result.stderr


def test_manage_py_check_names_a_queue_share_of_no_kind_of_task(settings):
    from labeling.checks import queue_shares_check

    settings.QUEUE_SHARES = {"rank_completions": 1, "rankings": 2}
    [error] = queue_shares_check(None)
    assert "'rankings', which is no kind of task" in error.msg
    settings.QUEUE_SHARES = {"rank_completions": 1}
    assert queue_shares_check(None) == []
