"""The web UI (`vislab ui`): Gradio tabs over the functions the CLI uses."""
