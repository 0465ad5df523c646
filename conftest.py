"""Repository-level test configuration."""
