"""Model bundles: the manifest schema, loading, signing and safe extraction."""
