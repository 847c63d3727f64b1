"""`convkit serve`: a local web page to look inside runs and try their models (draw a digit,
upload a photo), and the HTTP API it uses (docs/serve-api.md). Needs the `serve` extra:
pip install -e '.[serve]'."""

from convkit.serve.app import create_app, serve

__all__ = ["create_app", "serve"]
