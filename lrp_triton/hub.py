"""Whether the Hugging Face Hub can be reached, found out with one quick probe.

Without a network, `from_pretrained("org/name")` spends about 30 s in the hub client's retries
before it fails, even when the model sits in the local cache. The CLI asks `hub_unreachable()`
first and, when the hub is out of reach, loads with `local_files_only=True`: a cached model loads
at once, and a missing one fails at once with a message that says so.
"""

from __future__ import annotations

import os
import socket
from urllib.parse import urlsplit

DEFAULT_ENDPOINT = "https://huggingface.co"
_PROXY_VARIABLES = ("HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy", "ALL_PROXY", "all_proxy")


def hub_endpoint() -> str:
    """The hub address huggingface_hub uses (HF_ENDPOINT, or huggingface.co)."""
    return os.environ.get("HF_ENDPOINT", "").strip().rstrip("/") or DEFAULT_ENDPOINT


def hub_unreachable(timeout: float = 3.0) -> str | None:
    """Why the hub cannot be reached (a short phrase), or None when it can, or may.

    HF_HUB_OFFLINE=1 counts as unreachable without a probe. Behind a proxy the direct probe says
    nothing about the route the hub client takes, so the answer is None (let the client try).
    """
    if os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "on", "yes"):
        return "HF_HUB_OFFLINE is set"
    if any(os.environ.get(name) for name in _PROXY_VARIABLES):
        return None
    endpoint = hub_endpoint()
    parts = urlsplit(endpoint)
    if not parts.hostname:
        return None
    port = parts.port or (80 if parts.scheme == "http" else 443)
    try:
        with socket.create_connection((parts.hostname, port), timeout=timeout):
            return None
    except OSError as exc:
        return f"{endpoint} cannot be reached ({exc.strerror or type(exc).__name__})"
