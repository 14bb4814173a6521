"""What every log line of a process may carry about the work in hand: the request id
(set by the API's middleware, and by the dispatcher and the workers from the message
headers) and, with tracing on, the current span. Apart from ``observability`` so that
repositories and jobs can read it without importing the web stack."""

from __future__ import annotations

import contextvars
from collections.abc import Callable

request_id_var: contextvars.ContextVar[str | None] = contextvars.ContextVar(
    "request_id", default=None
)
# The current span's (trace id, span id) in hex, or None outside a span: installed by
# taskhub_api.tracing only when tracing is on, so logging costs nothing more when off.
span_ids: Callable[[], tuple[str, str] | None] | None = None
