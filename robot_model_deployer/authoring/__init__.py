"""Authoring bundles on a workstation: recognising an export, drafting its manifest, expected outputs."""
