"""The knowledge base: reading help-centre files, indexing them in SQLite, searching them."""
