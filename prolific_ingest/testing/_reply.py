"""What an emulator host answers: :class:`Reply`, and S3's XML errors."""

from __future__ import annotations

import json
from typing import Any

__all__ = ["Reply", "s3_error"]


class Reply:
    """A response to send: status, body (JSON-able, bytes or None) and headers."""

    def __init__(
        self,
        status: int,
        body: Any = None,
        headers: dict[str, str] | None = None,
        content_type: str = "application/json",
    ) -> None:
        self.status = status
        self.body = body
        self.headers = headers or {}
        self.content_type = content_type

    def payload(self) -> bytes:
        """The encoded body."""
        if self.body is None:
            return b""
        if isinstance(self.body, bytes):
            return self.body
        return json.dumps(self.body, ensure_ascii=False).encode("utf-8")


def s3_error(status: int, code: str, message: str) -> Reply:
    """An S3-style XML error."""
    xml = (
        '<?xml version="1.0" encoding="UTF-8"?>\n'
        f"<Error><Code>{code}</Code><Message>{message}</Message>"
        "<RequestId>EMULATOR</RequestId></Error>"
    )
    return Reply(status, xml.encode(), content_type="application/xml")
