"""The web app: the FastAPI server and the Gradio apps it mounts (customer chat, staff console, admin dashboard)."""
