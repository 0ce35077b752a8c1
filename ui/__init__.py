"""The three programs (web app, command line, benchmark suite) around one composition root, ui/app.py."""
