"""Config and rule files are read by libyaml when PyYAML has it, and judged by PyYAML's own
parser whenever libyaml refuses one: what loaded before libyaml was used still loads, the
same values, and a refused file gets the messages it always got."""

from __future__ import annotations

import pytest
import yaml

from sentinel.errors import YAMLSyntaxError
from sentinel.yamlsource import _FastLoader, load_yaml

ACCEPTED_BY_PYYAML_ONLY = {
    "tab after the indentation of a block scalar": "a: |\n  \tindented with a tab\nb: 1\n",
    "byte-order mark before a later key": "a: 1\n\ufeffb: 2\n",
}


def test_libyaml_reads_the_files_here() -> None:
    assert yaml.__with_libyaml__ and _FastLoader is not None  # CI's PyYAML has it


@pytest.mark.parametrize("text", ACCEPTED_BY_PYYAML_ONLY.values(), ids=ACCEPTED_BY_PYYAML_ONLY)
def test_a_file_only_pyyaml_accepts_still_loads_with_the_same_values(text: str) -> None:
    with pytest.raises(yaml.YAMLError):  # the premise: libyaml alone refuses it
        yaml.load(text, Loader=yaml.CSafeLoader)
    assert load_yaml(text, "f.yaml").data == yaml.safe_load(text)


def test_a_refused_file_gets_pyyamls_message_and_line() -> None:
    with pytest.raises(YAMLSyntaxError) as caught:
        load_yaml("a:\n  b: 1\n c: 2\n", "f.yaml")
    assert str(caught.value) == (
        "f.yaml:3: invalid YAML: expected <block end>, but found '<block mapping start>'"
    )
