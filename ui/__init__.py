"""The browser app: Gradio Blocks that draw and forward to `core.app.manager.RunManager`, nothing more.

`build_app(manager)` makes the page, `launch_app(demo, manager, ...)` serves it; `app.py` is the
command line around both.
"""

from ui.studio import build_app, launch_app

__all__ = ["build_app", "launch_app"]
