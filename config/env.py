"""Typed readers for settings that come from the environment.

Each reader returns the default when the variable is unset or empty, and raises
ImproperlyConfigured naming the variable when its value cannot be used, so a bad
deployment stops at start-up instead of misbehaving later.
"""

import json
import math
import os

from django.core.exceptions import ImproperlyConfigured

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}


def _raw(name):
    value = os.environ.get(name, "").strip()
    return value or None


def env_str(name, default=None, *, required=False):
    value = _raw(name)
    if value is None:
        if required:
            raise ImproperlyConfigured(f"{name} must be set.")
        return default
    return value


def env_choice(name, default, choices):
    value = _raw(name)
    if value is None:
        return default
    if value not in choices:
        raise ImproperlyConfigured(f"{name} must be one of {', '.join(choices)}; got {value!r}.")
    return value


def env_bool(name, default):
    value = _raw(name)
    if value is None:
        return default
    if value.lower() in _TRUE:
        return True
    if value.lower() in _FALSE:
        return False
    raise ImproperlyConfigured(f"{name} must be one of true/false, 1/0, yes/no, on/off; got {value!r}.")


def env_int(name, default, *, minimum=None, maximum=None):
    value = _raw(name)
    if value is None:
        return default
    try:
        number = int(value)
    except ValueError:
        raise ImproperlyConfigured(f"{name} must be a whole number; got {value!r}.") from None
    _check_range(name, number, minimum, maximum)
    return number


def env_float(name, default, *, minimum=None, maximum=None):
    value = _raw(name)
    if value is None:
        return default
    try:
        number = float(value)
    except ValueError:
        raise ImproperlyConfigured(f"{name} must be a number; got {value!r}.") from None
    if not math.isfinite(number):
        raise ImproperlyConfigured(f"{name} must be a finite number; got {value!r}.")
    _check_range(name, number, minimum, maximum)
    return number


def env_list(name, default):
    value = _raw(name)
    if value is None:
        return list(default)
    return [item.strip() for item in value.split(",") if item.strip()]


def env_ratios(name, default, *, count):
    """Comma-separated non-negative numbers that sum to 1, e.g. "0.8,0.1,0.1"."""
    value = _raw(name)
    if value is None:
        return tuple(default)
    try:
        ratios = tuple(float(item) for item in value.split(","))
    except ValueError:
        raise ImproperlyConfigured(f"{name} must be {count} comma-separated numbers; got {value!r}.") from None
    if len(ratios) != count or not all(math.isfinite(r) and r >= 0 for r in ratios) or abs(sum(ratios) - 1) > 1e-6:
        raise ImproperlyConfigured(
            f"{name} must be {count} non-negative numbers that add up to 1; got {value!r}."
        )
    return ratios


def _check_range(name, number, minimum, maximum):
    if minimum is not None and number < minimum:
        raise ImproperlyConfigured(f"{name} must be at least {minimum}; got {number}.")
    if maximum is not None and number > maximum:
        raise ImproperlyConfigured(f"{name} must be at most {maximum}; got {number}.")


def env_json(name, default):
    """A JSON object, e.g. '{"reward": {"epochs": 2}}'."""
    value = _raw(name)
    if value is None:
        return default
    try:
        parsed = json.loads(value)
    except json.JSONDecodeError as exc:
        raise ImproperlyConfigured(f"{name} must be a JSON object: {exc.msg} at character {exc.pos}.") from None
    if not isinstance(parsed, dict):
        raise ImproperlyConfigured(f"{name} must be a JSON object, not {type(parsed).__name__}.")
    return parsed
