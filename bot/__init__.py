"""Conversation logic: knowledge base, retrieval, routing (answer / FAQ / escalate), tickets."""
