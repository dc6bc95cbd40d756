"""The docs' Flask example (docs/your-own-service.md, "Any framework") is quoted from
tests/examples/, line for line (abridged, never rewritten): every line of its code blocks
is in the example's files."""

from __future__ import annotations

import re

from tests.helpers import REPO

EXAMPLES = REPO / "tests" / "examples"


def test_the_flask_quotes_are_the_examples_lines() -> None:
    page = (REPO / "docs" / "your-own-service.md").read_text()
    section = page.split("\n## Any framework", 1)[1].split("\n## ", 1)[0]
    sources = "\n".join(
        path.read_text()
        for path in (
            EXAMPLES / "flask_shop" / "service.py",
            EXAMPLES / "test_flask_service.py",
            EXAMPLES / "pytest-flask.ini",
        )
    )
    blocks = re.findall(r"```(?:python|ini)\n(.*?)```", section, re.S)
    assert len(blocks) == 3
    lines = [line for block in blocks for line in block.splitlines() if line.strip()]
    missing = [line for line in lines if line not in sources and line != "# pytest.ini"]
    assert not missing, missing
