"""Reports and stores: Markdown, JSON, exports, the history (JSON lines, SQL), trends and merged reports."""
