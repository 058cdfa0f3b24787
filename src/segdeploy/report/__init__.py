"""The run report: JSON record (schema-checked), Markdown and HTML renderings, plots."""
