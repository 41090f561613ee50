"""YAML for files nobody has vouched for yet: plain data only, bounded in every direction.

A manifest is read by ``rmd bundle inspect`` before any signature is checked,
and PyYAML's own loaders resolve anchors and aliases (the "billion laughs"
expansion), merge keys, tags and timestamps, keep the last of two equal keys
and recurse without a bound. Here libyaml (or PyYAML's pure-Python parser
where libyaml is missing) only tokenizes; the document is built from its
events by this module, which refuses all of the above by name.
"""
from __future__ import annotations

from typing import Any

import yaml
from yaml import events
from yaml.constructor import SafeConstructor
from yaml.nodes import ScalarNode
from yaml.resolver import Resolver

from robot_model_deployer.bundle.text import one_line, shown

MAX_DEPTH = 32
MAX_SCALAR_CHARS = 16 << 10
MAX_INT_CHARS = 24
MAX_NODES = 100_000

_Parser = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
_TAG = "tag:yaml.org,2002:"
_RESOLVER = Resolver()
_CONSTRUCTOR = SafeConstructor()


class StrictYamlError(ValueError):
    """The text is not plain, bounded YAML data; the message names the first problem and where."""


def load_strict_yaml(text: str, source: str) -> Any:
    """The one document in ``text`` as dicts, lists, str, int, float, bool and None."""
    builder = _Builder(source)
    try:
        for event in yaml.parse(text, Loader=_Parser):
            builder.feed(event)
    except yaml.YAMLError as exc:
        raise StrictYamlError(f"{source} is not valid YAML: {one_line(str(exc).splitlines()[0], 200)}") from None
    return builder.result


class _Builder:
    """Turns a parser's event stream into plain containers, checking each event as it comes."""

    def __init__(self, source: str) -> None:
        self._source = source
        self._stack: list[tuple[Any, list[Any]]] = []  # (container, pending mapping key holder)
        self._documents = 0
        self._nodes = 0
        self.result: Any = None

    def feed(self, event: events.Event) -> None:
        if isinstance(event, events.DocumentStartEvent):
            self._documents += 1
            if self._documents > 1:
                raise self._error("holds more than one YAML document")
            return
        if isinstance(event, events.AliasEvent):
            raise self._error(f"uses an alias (*{shown(event.anchor)}); anchors and aliases are not allowed")
        if isinstance(event, events.NodeEvent):
            self._nodes += 1
            if self._nodes > MAX_NODES:
                raise self._error(f"has more than {MAX_NODES} values")
            if event.anchor is not None:
                raise self._error(f"defines an anchor (&{shown(event.anchor)}); anchors and aliases are not allowed")
        if isinstance(event, (events.MappingStartEvent, events.SequenceStartEvent)):
            if event.tag is not None and event.tag != "!":
                raise self._error(f"uses the tag {shown(event.tag)}; tags are not allowed")
            if len(self._stack) >= MAX_DEPTH:
                raise self._error(f"nests deeper than {MAX_DEPTH} levels")
            self._stack.append(({} if isinstance(event, events.MappingStartEvent) else [], []))
        elif isinstance(event, (events.MappingEndEvent, events.SequenceEndEvent)):
            container, _ = self._stack.pop()
            self._add(container)
        elif isinstance(event, events.ScalarEvent):
            self._add(self._scalar(event))

    def _scalar(self, event: events.ScalarEvent) -> Any:
        value = event.value
        if event.tag is not None and event.tag != "!":
            raise self._error(f"uses the tag {shown(event.tag)}; tags are not allowed")
        if len(value) > MAX_SCALAR_CHARS:
            raise self._error(f"has a value of {len(value)} characters (at most {MAX_SCALAR_CHARS})")
        if not event.implicit[0]:  # quoted or block scalar: a string, whatever it looks like
            return value
        tag = _RESOLVER.resolve(ScalarNode, value, event.implicit)
        if tag == _TAG + "str":
            return value
        if tag == _TAG + "null":
            return None
        if tag == _TAG + "bool":
            return _CONSTRUCTOR.construct_yaml_bool(ScalarNode(tag, value))
        if tag == _TAG + "int":
            if len(value) > MAX_INT_CHARS:
                raise self._error(f"has an integer of {len(value)} characters (at most {MAX_INT_CHARS})")
            return _CONSTRUCTOR.construct_yaml_int(ScalarNode(tag, value))
        if tag == _TAG + "float":
            if len(value) > MAX_INT_CHARS * 2:
                raise self._error(f"has a number of {len(value)} characters")
            return _CONSTRUCTOR.construct_yaml_float(ScalarNode(tag, value))
        kind = tag.removeprefix(_TAG)
        raise self._error(f"has the value {shown(value)}, which YAML reads as a {kind}; put it in quotes if it "
                          "is text")

    def _add(self, value: Any) -> None:
        if not self._stack:
            self.result = value
            return
        container, key = self._stack[-1]
        if isinstance(container, list):
            container.append(value)
        elif not key:
            if isinstance(value, (dict, list)):
                raise self._error("uses a mapping or a list as a key")
            if value in container:
                raise self._error(f"has the key {shown(value)} twice in one mapping")
            key.append(value)
        else:
            container[key.pop()] = value

    def _error(self, problem: str) -> StrictYamlError:
        return StrictYamlError(f"{self._source} {problem}")
