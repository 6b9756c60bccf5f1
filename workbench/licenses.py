"""Licence identifiers (`import --license SPDX`): the SPDX ids datasets commonly carry, checked, never guessed.

A name that is not one of these is refused with the hint to write it as `LicenseRef-<name>` (SPDX's form for any
other licence), so "apache" or "CC-BY" (which version?) never become a licence silently.
"""
from __future__ import annotations

import re

SPDX = (
    "0BSD", "AFL-3.0", "AGPL-3.0-only", "AGPL-3.0-or-later", "Apache-2.0", "Artistic-2.0", "BSD-2-Clause",
    "BSD-3-Clause", "BSD-3-Clause-Clear", "BSL-1.0", "CC-BY-1.0", "CC-BY-2.0", "CC-BY-2.5", "CC-BY-3.0", "CC-BY-4.0",
    "CC-BY-NC-2.0", "CC-BY-NC-3.0", "CC-BY-NC-4.0", "CC-BY-NC-ND-3.0", "CC-BY-NC-ND-4.0", "CC-BY-NC-SA-2.0",
    "CC-BY-NC-SA-3.0", "CC-BY-NC-SA-4.0", "CC-BY-ND-4.0", "CC-BY-SA-3.0", "CC-BY-SA-4.0", "CC0-1.0", "CDLA-Permissive-1.0",
    "CDLA-Permissive-2.0", "CDLA-Sharing-1.0", "ECL-2.0", "EPL-1.0", "EPL-2.0", "EUPL-1.1", "EUPL-1.2", "GFDL-1.3-only",
    "GFDL-1.3-or-later", "GPL-2.0-only", "GPL-2.0-or-later", "GPL-3.0-only", "GPL-3.0-or-later", "ISC",
    "LGPL-2.1-only", "LGPL-2.1-or-later", "LGPL-3.0-only", "LGPL-3.0-or-later", "LPPL-1.3c", "MIT", "MIT-0",
    "MPL-2.0", "MS-PL", "NCSA", "ODbL-1.0", "ODC-By-1.0", "OFL-1.1", "OSL-3.0", "PDDL-1.0", "PostgreSQL",
    "Unlicense", "UPL-1.0", "WTFPL", "Zlib",
)
_BY_LOWER = {s.lower(): s for s in SPDX}
_REF = re.compile(r"LicenseRef-[A-Za-z0-9.\-]+")

# the Hugging Face Hub's `license:` ids for the SPDX ids above that it knows under another name
_HUB = {"ODC-By-1.0": "odc-by", "GPL-2.0-only": "gpl-2.0", "GPL-3.0-only": "gpl-3.0", "LGPL-3.0-only": "lgpl-3.0",
        "AGPL-3.0-only": "agpl-3.0", "ODbL-1.0": "odbl", "PDDL-1.0": "pddl", "CDLA-Permissive-1.0": "cdla-permissive-1.0"}


class LicenseError(ValueError):
    pass


def normalize(text: str) -> str:
    """The canonical SPDX id for `text` (case-insensitive), or LicenseError naming what was given."""
    t = text.strip()
    if t in SPDX:
        return t
    if t.lower() in _BY_LOWER:
        return _BY_LOWER[t.lower()]
    if _REF.fullmatch(t):
        return t
    raise LicenseError(f"--license {text!r}: not an SPDX licence id this workbench knows (e.g. Apache-2.0, MIT, "
                       f"CC-BY-4.0, CC-BY-SA-4.0, CC0-1.0); write any other licence as LicenseRef-<name>")


def hub_id(spdx: str) -> str | None:
    """The id the Hub's dataset card takes for `spdx`, or None (then the card says `other` and names it)."""
    if spdx.startswith("LicenseRef-"):
        return None
    return _HUB.get(spdx, spdx.lower())
