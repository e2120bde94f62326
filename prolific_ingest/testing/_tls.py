"""A throw-away certificate authority for the emulator's HTTPS mode (uses ``trustme``)."""

from __future__ import annotations

import ssl
from pathlib import Path

__all__ = ["make_tls"]


def make_tls(workdir: Path) -> tuple[ssl.SSLContext, str]:
    """Return a server context for ``localhost``/``127.0.0.1`` and the CA bundle path."""
    try:
        import trustme
    except ImportError as exc:  # pragma: no cover - depends on the environment
        msg = "Emulator(tls=True) needs the 'trustme' package: pip install 'prolific-ingest[tls]'"
        raise RuntimeError(msg) from exc
    ca = trustme.CA()
    cert = ca.issue_cert("localhost", "127.0.0.1")
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    cert.configure_cert(context)
    bundle = workdir / "emulator-ca.pem"
    ca.cert_pem.write_to_path(str(bundle))
    return context, str(bundle)
