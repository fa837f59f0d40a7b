"""Task type placeholder (filled in by its issue)."""
