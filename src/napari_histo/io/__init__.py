"""File formats: lazy slide readers, annotations and writers (never torch, never Qt)."""
