"""The transport pieces the API client and the downloader share.

- ``retry``: RetryPolicy (public as ``prolific_ingest.RetryPolicy``), the backoff
  schedule, what is retriable, Retry-After parsing -- pure;
- ``watchdog``: per-operation time limits and stall detection on a requests session;
- ``scrub``: removing secrets from server text and transport logs;
- ``api_errors``: an error response -> the typed exception, with its request id.
"""
