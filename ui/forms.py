"""Config fields as widgets, and widget values back into a `Config`.

Owns: one widget per config field, its label (translated) and its tooltip (`info=`, the field's
help text from `core/config.py`, written once there, translated through `ui/i18n.py`), and
`Form.to_config`, which turns the values of every widget (passed by name through Gradio's
`inputs_kwargs`) into a validated `Config`. Widget names are `<section>_<field>` (`algorithm_max_steps`), plus `reward_<preset>`
and `weight_<preset>` for the reward checklist, so API clients call actions by those names.

Refuses to know: what a run does with the config (the manager), page layout (the tabs).
"""

from __future__ import annotations

import dataclasses

import gradio as gr

from core.config import Config, field_help, field_spec
from ui.i18n import TEXT, t

# fields shown as sliders: (min, max, step)
_SLIDERS = {
    ("algorithm", "temperature"): (0.1, 2.0, 0.05),
    ("algorithm", "top_p"): (0.05, 1.0, 0.05),
    ("model", "lora_dropout"): (0.0, 0.5, 0.05),
}


class Form:
    """Every config widget of the page, by name."""

    def __init__(self, defaults: Config):
        self.defaults = defaults
        self.components: dict[str, gr.components.Component] = {}
        self.reward_names: list[str] = []

    # -- building ------------------------------------------------------------------
    def field(self, section: str, name: str, **overrides) -> gr.components.Component:
        """A widget for `section.name`, labelled, with the config's help text as its tooltip."""
        spec = field_spec(section, name)
        value = getattr(getattr(self.defaults, section), name)
        key = f"f.{section}.{name}"
        label = t(key) if key in TEXT else name.replace("_", " ")  # a field newer than the translations
        help_key = f"h.{section}.{name}"
        kw = dict(label=label, info=t(help_key) if help_key in TEXT else field_help(section, name), value=value)
        kw.update(overrides)
        if "choices" in spec and not isinstance(value, list):
            widget = gr.Dropdown(choices=spec["choices"], **kw)
        elif isinstance(value, bool):
            widget = gr.Checkbox(**kw)
        elif (section, name) in _SLIDERS:
            lo, hi, step = _SLIDERS[(section, name)]
            widget = gr.Slider(minimum=lo, maximum=hi, step=step, **kw)
        elif isinstance(value, int):
            lo, hi = spec.get("range", (None, None))
            widget = gr.Number(precision=0, minimum=lo, maximum=hi, **kw)
        elif isinstance(value, float):
            lo, hi = spec.get("range", (None, None))
            widget = gr.Number(minimum=lo, maximum=hi, **kw)
        else:
            widget = gr.Textbox(**kw)
        return self.add(f"{section}_{name}", widget)

    def add(self, key: str, widget: gr.components.Component) -> gr.components.Component:
        if key in self.components:
            raise ValueError(f"widget {key!r} defined twice")
        self.components[key] = widget
        return widget

    # -- reading -------------------------------------------------------------------
    def to_config(self, values: dict) -> Config:
        """A Config from widget values by name; missing names keep the defaults. Validated."""
        d = self.defaults.to_dict()
        for key, value in values.items():
            section, _, name = key.partition("_")
            if section in d and name in d[section]:
                d[section][name] = _coerce(d[section][name], value)
        names = [n for n in self.reward_names if values.get(f"reward_{n}")]
        if any(f"reward_{n}" in values for n in self.reward_names):
            d["rewards"]["names"] = names
            d["rewards"]["weights"] = [float(values.get(f"weight_{n}") or 0.0) for n in names]
        return Config.from_dict(d)


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
