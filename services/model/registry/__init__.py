"""Model versions: the registry's domain types, its promotion, archive and settings rules, artifacts, use cases and
store."""
