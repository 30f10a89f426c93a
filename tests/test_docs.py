"""The README's metric table is the catalogue's."""

from pathlib import Path

from hayscope.metrics import catalogue_markdown

README = Path(__file__).resolve().parent.parent / "README.md"


def test_the_readme_shows_the_metric_catalogue_as_it_is():
    assert catalogue_markdown() in README.read_text()
