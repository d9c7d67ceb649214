"""Reports of run directories: HTML, Markdown and JSON."""
