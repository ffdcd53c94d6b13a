"""Option values that used to crash or sample garbage get one `Error:` line (issue 12, items 10 and 11)."""

import pytest
from click.testing import CliRunner

from cheaplm.cli import main


@pytest.mark.parametrize("command", ["sample", "chat"])
@pytest.mark.parametrize("value", ["nan", "inf", "1e-310", "1e308"])
def test_temperature_that_cannot_sample_is_refused(tmp_path, command, value):
    # checked before the run directory is read: a missing one must not be what fails
    result = CliRunner().invoke(main, [command, str(tmp_path / "no-run"), "--temperature", value], input="")
    assert result.exit_code == 1, result.output
    assert result.output.strip().splitlines()[-1].startswith("Error: --temperature must be"), result.output
    for usable in ("0", "0.001", "0.8", "1000"):
        result = CliRunner().invoke(main, [command, str(tmp_path / "no-run"), "--temperature", usable], input="")
        assert "--temperature" not in result.output and "no-run" in result.output, result.output


@pytest.mark.parametrize("command", ["sample", "chat"])
def test_a_search_out_of_range_is_refused(tmp_path, command):
    for bad in ("0", "17", "-2"):
        result = CliRunner().invoke(main, [command, str(tmp_path / "no-run"), "--search", bad], input="")
        assert result.exit_code == 1, result.output
        assert result.output.strip().splitlines()[-1].startswith("Error: --search must be"), result.output
    result = CliRunner().invoke(main, [command, str(tmp_path / "no-run"), "--search", "4"], input="")
    assert "--search" not in result.output and "no-run" in result.output, result.output
