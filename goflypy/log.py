"""Named loggers; modules import the one they need."""

import logging

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
