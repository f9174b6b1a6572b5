"""A config written by a person (or by someone else: a copied-in run folder): YAML read safely, and
`section.field=value` overrides (the CLI's `--set`).

Owns: `read_yaml` (plain data only, no tags, a bound on what aliases expand to),
`apply_overrides` and `coerce_number` (a number written as text). Refuses to know: the fields
themselves (`core.config` checks them).
"""

from __future__ import annotations

import math
from typing import Any

import yaml

from core.errors import ConfigError


# Values a config may expand to, aliases counted as often as they are used: a real config has a
# few hundred; a "billion laughs" file (aliases of aliases) expands to billions and would hang
# whatever walks it (issue 29).
MAX_YAML_VALUES = 100_000


def _expanded_size(node, memo: dict) -> int:
    """How many values `node` stands for once every alias is expanded (memoised: linear time)."""
    key = id(node)
    if key not in memo:
        memo[key] = 1  # a cycle counts once (SafeLoader builds it as a self-reference)
        if isinstance(node, yaml.SequenceNode):
            memo[key] = 1 + sum(_expanded_size(child, memo) for child in node.value)
        elif isinstance(node, yaml.MappingNode):
            memo[key] = 1 + sum(_expanded_size(k, memo) + _expanded_size(v, memo) for k, v in node.value)
    return memo[key]


def read_yaml(text: str, where: str = "config") -> Any:
    """`text` parsed as plain YAML data (no Python tags), or ConfigError naming `where` and what
    is wrong: a syntax error, a tag, or aliases that expand past MAX_YAML_VALUES values.

    >>> read_yaml("a: &x [1, 2]\\nb: *x")
    {'a': [1, 2], 'b': [1, 2]}
    >>> read_yaml("x: !!python/name:os.system ''", "--set")
    Traceback (most recent call last):
    ...
    core.errors.ConfigError: --set: not plain YAML data: could not determine a constructor for the tag 'tag:yaml.org,2002:python/name:os.system'
    """
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
        if node is not None and _expanded_size(node, {}) > MAX_YAML_VALUES:
            raise ConfigError(f"{where}: its aliases (&name / *name) expand to more than "
                              f"{MAX_YAML_VALUES:,} values; write the values out")
        return yaml.safe_load(text)
    except yaml.constructor.ConstructorError as e:
        raise ConfigError(f"{where}: not plain YAML data: {e.problem}") from None
    except yaml.YAMLError as e:
        raise ConfigError(f"{where}: not valid YAML ({e})") from None
    except RecursionError:
        raise ConfigError(f"{where}: nested too deeply to be a config") from None


def apply_overrides(cfg, items: list[str]):
    """`section.field=value` pairs (value parsed as YAML) applied on top of `cfg` (a `Config`),
    then validated: a new `Config`.

    >>> from core.config import Config
    >>> apply_overrides(Config(), ["algorithm.num_generations=6"]).algorithm.num_generations
    6
    """
    d = cfg.to_dict()
    for item in items:
        if "=" not in item or "." not in item.split("=", 1)[0]:
            raise ConfigError(f"--set {item!r}: expected section.field=value")
        key, value = item.split("=", 1)
        section, name = key.split(".", 1)
        if section not in d:
            raise ConfigError(f"--set {item!r}: unknown section {section!r}")
        d[section][name] = read_yaml(value, f"--set {item!r}")
    return type(cfg).from_dict(d)


def coerce_number(default: Any, value: Any) -> Any:
    """A number written as text ("1e-4": YAML 1.1 reads an exponent without a dot as a string) into a
    field whose default is a number becomes that number; anything else is left for the field's
    check to judge (`core.config`).

    >>> coerce_number(1e-5, "1e-4"), coerce_number(8, "16"), coerce_number(8, "1.5"), coerce_number(True, "1")
    (0.0001, 16, '1.5', '1')
    """
    if isinstance(default, bool) or not isinstance(default, (int, float)) or not isinstance(value, str):
        return value
    try:
        number = float(value.strip().replace("_", ""))
    except ValueError:
        return value
    if isinstance(default, int):
        return int(number) if math.isfinite(number) and number == int(number) else value
    return number
