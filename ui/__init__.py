"""Gradio apps (customer chat, staff console, admin dashboard), the server entry point and the CLI."""
