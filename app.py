"""Hugging Face Space entry point: the MARLIN app, built by `marlin_transformers.app.build_app`.

On a Space, set the variable MARLIN_MODEL to a `.full.pt` file or a converted pretraining folder in the Space (or a
Hub id of one); without it the app runs on randomly initialized weights and says so. Locally: `marlin app`.
"""

import os

from marlin_transformers.app import build_app

demo = build_app(model=os.environ.get("MARLIN_MODEL") or None)

if __name__ == "__main__":
    demo.queue().launch(allowed_paths=[str(demo.marlin_work_dir)], ssr_mode=False)
