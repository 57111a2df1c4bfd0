"""Dialog: knowledge base retrieval and grounded replies."""
