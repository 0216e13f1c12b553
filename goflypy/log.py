"""Named loggers; modules import the one they need."""

import logging

from aiohttp.http_exceptions import HttpProcessingError

access = logging.getLogger("goflypy.access")
ws = logging.getLogger("goflypy.ws")
store = logging.getLogger("goflypy.store")
nlp = logging.getLogger("goflypy.nlp")
server = logging.getLogger("goflypy.server")


def configure(level: str) -> None:
    """Send goflypy's log lines to stderr at ``level``."""
    logging.basicConfig(
        level=level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    # aiohttp's own access log repeats ours; keep it for debugging only.
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)
    logging.getLogger("aiohttp.server").addFilter(refuse_bad_requests_quietly)


def refuse_bad_requests_quietly(record: logging.LogRecord) -> bool:
    """Turn aiohttp's traceback for a malformed request into one WARNING line.

    A client that sends a broken or oversized request line or header is the
    client's error, not the server's, and the request line may hold what a
    person typed (a search, a question), which no log above DEBUG keeps.
    """
    error = record.exc_info[1] if record.exc_info else None
    if isinstance(error, HttpProcessingError):
        record.msg = "malformed HTTP request refused: %s (%s)"
        record.args = (type(error).__name__, error.code)
        record.exc_info = None
        record.exc_text = None
        record.levelno = logging.WARNING
        record.levelname = "WARNING"
    return True
