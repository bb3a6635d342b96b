"""README.md stays true: its configuration table is the one generated from Settings."""

from pathlib import Path

from mlhub.docs import settings_table

README = Path(__file__).parents[2] / "README.md"


def test_the_readme_configuration_table_matches_settings():
    assert settings_table() in README.read_text(), (
        "README.md's configuration table is stale: paste mlhub.docs.settings_table() into it"
    )


def test_the_readme_opens_with_the_two_commands():
    first_block = README.read_text().split("```")[1]
    assert "make demo" in first_block and "make test" in first_block
