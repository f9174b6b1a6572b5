"""Config fields as widgets, and widget values back into a `Config`.

Owns: one widget per config field, its label (translated) and its tooltip (`info=`, the field's
help text from `core/config.py`, written once there, translated through `ui/i18n.py`), and
`Form.to_config`, which turns the values of every widget (passed by name through Gradio's
`inputs_kwargs`) into a validated `Config`. Widget names are `<section>_<field>` (`algorithm_max_steps`), plus `reward_<preset>`
and `weight_<preset>` for the reward checklist, so API clients call actions by those names.

`Form.values` is the inverse of `to_config`: the widget values that show a given config. The page
uses it on load to show the running (or last) run's settings (`Form.show`), so a reloaded page
neither shows the defaults beside a run that uses other settings nor starts the next run, or
resumes this one, with them (issue 30). Widgets outside the config that show something of it
(which kind of data source is picked) register with `Form.follow`.

Refuses to know: what a run does with the config (the manager), page layout (the tabs).
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Callable

import gradio as gr

from core.config import Config, field_help, field_spec
from core.errors import ConfigError
from core.rewards.registry import REGISTRY
from ui.i18n import TEXT, en, t

# fields shown as sliders: their step; the ends are the field's own range in core/config.py, so the page
# allows what the config does (a Temperature of 0 snapped to a slider's own 0.1 without a word, while the
# config takes 0.01). Each step lands on both ends and on the default from the lower end.
_SLIDERS = {
    ("algorithm", "temperature"): 0.01,
    ("algorithm", "top_p"): 0.01,
    ("model", "lora_dropout"): 0.05,
}


def number_step(value) -> float:
    """The arrows' step of a number box: 1 for whole numbers, else the default's leading decimal place
    (the arrow turned a learning rate of 0.0003 into 1.0003 with Gradio's step of 1).

    >>> number_step(20), number_step(3e-4), number_step(0.2), number_step(0.0), number_step(1.0)
    (1, 0.0001, 0.1, 0.01, 1.0)
    """
    if isinstance(value, int):
        return 1
    if not value:
        return 0.01
    return float(f"1e{math.floor(math.log10(abs(value)))}")


class Form:
    """Every config widget of the page, by name."""

    def __init__(self, defaults: Config):
        self.defaults = defaults
        self.components: dict[str, gr.components.Component] = {}
        self.reward_names: list[str] = []
        self.followers: list[tuple[list[gr.components.Component], Callable[[Config], list]]] = []

    # -- building ------------------------------------------------------------------
    def field(self, section: str, name: str, **overrides) -> gr.components.Component:
        """A widget for `section.name`, labelled, with the config's help text as its tooltip."""
        spec = field_spec(section, name)
        value = getattr(getattr(self.defaults, section), name)
        label = self._label(section, name)
        help_key = f"h.{section}.{name}"
        kw = dict(label=label, info=t(help_key) if help_key in TEXT else field_help(section, name), value=value)
        kw.update(overrides)
        if "choices" in spec and not isinstance(value, list):
            widget = gr.Dropdown(choices=spec["choices"], **kw)
        elif isinstance(value, bool):
            widget = gr.Checkbox(**kw)
        elif (section, name) in _SLIDERS:
            lo, hi = spec["range"]
            widget = gr.Slider(minimum=lo, maximum=hi, step=_SLIDERS[(section, name)], **kw)
        elif isinstance(value, (int, float)):
            # no minimum/maximum on the widget: Gradio's own check raised a toast per event that reads
            # the box (twice, naming no field) and a traceback in the log; the config's check
            # (`core.config.validate`) refuses the value once, by its name and range
            widget = gr.Number(precision=0 if isinstance(value, int) else None, step=number_step(value), **kw)
        else:
            widget = gr.Textbox(**kw)
        return self.add(f"{section}_{name}", widget)

    @staticmethod
    def _label(section: str, name: str) -> str:
        key = f"f.{section}.{name}"
        return t(key) if key in TEXT else name.replace("_", " ")  # a field newer than the translations

    @staticmethod
    def _plain_label(section: str, name: str) -> str:
        """The label as plain text, for a message built on the server (a toast shows a translatable
        label inside an f-string as its raw key)."""
        key = f"f.{section}.{name}"
        return en(key) if key in TEXT else name.replace("_", " ")

    def add(self, key: str, widget: gr.components.Component) -> gr.components.Component:
        if key in self.components:
            raise ValueError(f"widget {key!r} defined twice")
        if widget.elem_id is None:  # found by its API name in a page (tests, scripts)
            widget.elem_id = f"form-{key}"
        self.components[key] = widget
        return widget

    def follow(self, outputs: list[gr.components.Component], fn: Callable[[Config], list]) -> None:
        """Widgets outside the config that show something of it (the kind of data source, the task
        picked) follow the form when it shows a config: `fn(cfg)` gives their values, in order."""
        self.followers.append((list(outputs), fn))

    # -- reading -------------------------------------------------------------------
    def to_config(self, values: dict) -> Config:
        """A Config from widget values by name; missing names keep the defaults. Validated."""
        d = self.defaults.to_dict()
        for key, value in values.items():
            section, _, name = key.partition("_")
            if section in d and name in d[section]:
                default = d[section][name]
                if isinstance(default, (int, float)) and not isinstance(default, bool):
                    if value is None:  # an emptied number box: never run on a value the page does not show
                        raise ConfigError(f"'{self._plain_label(section, name)}' is empty: enter a number "
                                          f"(its default is {default}).")
                    if not math.isfinite(float(value)):
                        raise ConfigError(f"'{self._plain_label(section, name)}' = {value}: enter a finite number.")
                    if isinstance(default, int) and float(value) != int(float(value)):  # never rounded unsaid
                        raise ConfigError(f"'{self._plain_label(section, name)}' = {value}: enter a whole number.")
                d[section][name] = _coerce(default, value)
        names = [n for n in self.reward_names if values.get(f"reward_{n}")]
        if any(f"reward_{n}" in values for n in self.reward_names):
            d["rewards"]["names"] = names
            empty = [n for n in names if f"weight_{n}" in values and values[f"weight_{n}"] is None]
            if empty:  # as for the other number boxes: never a weight the page does not show
                raise ConfigError(f"the weight of {', '.join(empty)} is empty: enter a number.")
            d["rewards"]["weights"] = [float(values.get(f"weight_{n}") or 0.0) for n in names]
        return Config.from_dict(d)

    # -- showing -------------------------------------------------------------------
    def values(self, cfg: Config) -> dict[str, Any]:
        """The widget values, by name, that show `cfg`: `to_config(values(cfg))` gives `cfg` back,
        but for the run name, left empty (a run's name is its own: a Start with it is refused)."""
        d = cfg.to_dict()
        out: dict[str, Any] = {}
        for key in self.components:
            section, _, name = key.partition("_")
            if section in d and name in d[section]:
                out[key] = d[section][name]
        if "run_run_name" in out:
            out["run_run_name"] = ""
        r = cfg.rewards
        weights = [float(w) for w in r.weights] if r.weights else [
            REGISTRY[n].default_weight if n in REGISTRY else 0.0 for n in r.names]
        chosen = dict(zip(r.names, weights))
        for n in self.reward_names:
            out[f"reward_{n}"] = n in chosen
            out[f"weight_{n}"] = chosen.get(n, REGISTRY[n].default_weight if n in REGISTRY else 0.0)
        return out

    def outputs(self) -> list[gr.components.Component]:
        """Every widget `show` sets: the config's and their followers."""
        out = list(self.components.values())
        for widgets, _ in self.followers:
            out += [w for w in widgets if w not in out]
        return out

    def _float_box(self, key: str) -> bool:
        widget = self.components[key]
        return isinstance(widget, gr.Number) and widget.precision is None

    def show(self, cfg: Config) -> dict[gr.components.Component, Any]:
        """Updates that make the page show `cfg` (for an event whose outputs are `outputs()`)."""
        out: dict[gr.components.Component, Any] = {
            self.components[k]: gr.update(value=v, step=number_step(v)) if self._float_box(k) and v else gr.update(value=v)
            for k, v in self.values(cfg).items()}  # a float box steps by the value shown (a recipe's lr 5e-6)
        for widgets, fn in self.followers:
            out.update(zip(widgets, fn(cfg), strict=True))
        return out


def _coerce(default, value):
    """A widget's value in the type of the field's default (Number gives floats, Textbox text)."""
    if value is None:
        return default
    if isinstance(default, bool):
        return bool(value)
    if isinstance(default, int):
        return int(round(float(value)))
    if isinstance(default, float):
        return float(value)
    if isinstance(default, list):
        if isinstance(value, str):
            return [v.strip() for v in value.split(",") if v.strip()]
        return list(value)
    if isinstance(default, str):
        return str(value)
    return value


def config_fields(section: str) -> list[str]:
    """Field names of a config section, in their declared order."""
    cls = {f.name: f.default_factory for f in dataclasses.fields(Config)}[section]
    return [f.name for f in dataclasses.fields(cls)]
