"""Strict YAML: plain manifests read as PyYAML reads them; anything that can blow up or mislead is refused."""
from __future__ import annotations

import time

import pytest
import yaml

from robot_model_deployer.bundle.strict_yaml import MAX_DEPTH, StrictYamlError, load_strict_yaml
from robot_model_deployer.bundle.text import one_line, printable, shown

PLAIN = """
name: colour_classifier
version: "1.2.0"
task: classification
input: {width: 32, height: 32, mean: [0.5, 0.5, 0.5], scale: 0.0039, letterbox: false}
labels: labels.txt
empty:
count: 0x1F
big: 1_000
ratio: .5
nothing: null
inf: .inf
text: |
  two
  lines
"""


def test_plain_data_reads_exactly_as_pyyaml_reads_it():
    assert load_strict_yaml(PLAIN, "m.yaml") == yaml.safe_load(PLAIN)


def test_an_empty_document_is_none():
    assert load_strict_yaml("", "m.yaml") is None


@pytest.mark.parametrize("text, match", [
    ("a: &x [1]\nb: *x\n", "anchor"),
    ("a: *x\n", "alias|not valid YAML"),
    ("a: !!python/object:os.system ls\n", "tag"),
    ("a: !!int '3'\n", "tag"),
    ("a: !custom {b: 1}\n", "tag"),
    ("a: 1\na: 2\n", "key a twice"),
    ("a: {b: 1, b: 2}\n", "key b twice"),
    ("? [1, 2]\n: x\n", "as a key"),
    ("<<: {a: 1}\n", "merge"),
    ("when: 2024-01-01\n", "timestamp; put it in quotes"),
    ("a: 1\n---\nb: 2\n", "more than one YAML document"),
    ("a: " + "9" * 5000 + "\n", "integer of 5000 characters"),
    ("a: '" + "x" * 20000 + "'\n", "value of 20000 characters"),
    ("a: [1\n", "not valid YAML"),
])
def test_refuses_what_could_blow_up_or_mislead(text, match):
    with pytest.raises(StrictYamlError, match=match):
        load_strict_yaml(text, "m.yaml")


def test_refuses_deep_nesting_before_recursing():
    started = time.perf_counter()
    with pytest.raises(StrictYamlError, match=f"deeper than {MAX_DEPTH}"):
        load_strict_yaml("[" * 100 + "]" * 100, "m.yaml")
    with pytest.raises(StrictYamlError, match="not valid YAML"):  # libyaml's own bound
        load_strict_yaml("[" * 100_000 + "]" * 100_000, "m.yaml")
    assert time.perf_counter() - started < 1.0
    assert load_strict_yaml("a:" + " [" * (MAX_DEPTH - 1) + "]" * (MAX_DEPTH - 1), "m.yaml") is not None


def test_a_billion_laughs_document_is_refused_at_its_first_anchor():
    laughs = "a: &a ['lol','lol','lol','lol','lol','lol','lol','lol','lol']\n" + "".join(
        f"{chr(98 + i)}: &{chr(98 + i)} [*{chr(97 + i)},*{chr(97 + i)},*{chr(97 + i)},*{chr(97 + i)}]\n"
        for i in range(9))
    with pytest.raises(StrictYamlError, match="anchor"):
        load_strict_yaml(laughs, "m.yaml")


def test_error_messages_show_hostile_values_escaped_and_short():
    key = "\"\\e[2J\u202eevil" + "x" * 500 + "\""  # YAML's "\e" escape is ESC
    text = f"a: 1\n{key}: 2\n{key}: 3\n"
    with pytest.raises(StrictYamlError) as caught:
        load_strict_yaml(text, "m.yaml")
    message = str(caught.value)
    assert "\x1b" not in message and "\u202e" not in message
    assert "\\x1b" in message and "\\u202e" in message
    assert len(message) < 200


def test_printable_escapes_controls_bidi_and_surrogates_and_keeps_the_rest():
    assert printable("résumé café 模型") == "résumé café 模型"
    assert printable("a\x00b\x9b\u202e\u2066\ud800\n") == "a\\x00b\\x9b\\u202e\\u2066\\ud800\\x0a"
    assert shown("x" * 1000).endswith("(1000 characters)")
    assert one_line("line one\nline two", 12) == "line one\\..."
