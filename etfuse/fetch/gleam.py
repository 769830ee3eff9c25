"""``gleam``: GLEAM yearly files from the GLEAM SFTP server.

``fetch.gleam.path_pattern`` (``/data/{version}/daily/{year}/E_{year}_GLEAM_{version}.nc``) is
globbed with ``{version}`` and ``{year}`` as wildcards, so a new year or a new version (v3.8a to
v4.2a) is picked up as soon as it appears; ``--since/--until`` keep only the years in range.  An
unchanged file (same path, size and modification time as in the ledger) is never downloaded again.
Login: GLEAM_SFTP_USERNAME / GLEAM_SFTP_PASSWORD (environment or .env), else ``.netrc``.
"""

from __future__ import annotations

import re
from datetime import date

from etfuse.fetch import register
from etfuse.fetch.remote import PullFetcher
from etfuse.fetch.transport import RemoteFile


def pattern_regex(pattern: str) -> re.Pattern[str]:
    """``{year}`` -> 4 digits, ``{version}`` -> a version token, the rest literal (``*`` any name part)."""
    text = re.escape(pattern).replace(r"\*", "[^/]*")
    text = text.replace(r"\{year\}", r"(?P<year>\d{4})", 1).replace(r"\{year\}", r"(?P=year)")
    text = text.replace(r"\{version\}", r"(?P<version>v[0-9][0-9A-Za-z.]*)", 1).replace(r"\{version\}", r"(?P=version)")
    return re.compile(text + "$")


@register
class GleamFetcher(PullFetcher):
    name = "gleam"
    credential_prefix = "GLEAM_SFTP"

    def remote_files(self, *, since: date | None, until: date | None) -> list[RemoteFile]:
        pattern = self.config.path_pattern
        wanted = pattern_regex(pattern)
        found = self.transport.glob(pattern.replace("{year}", "*").replace("{version}", "*"))
        keep = []
        for remote in found:
            match = wanted.search(remote.path)
            if match is None:
                continue
            year = int(match.group("year")) if "year" in match.groupdict() else None
            if year is not None and ((since and year < since.year) or (until and year > until.year)):
                continue
            keep.append(remote)
        return keep
