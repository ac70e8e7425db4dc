"""Persistent gallery of identities: FAISS retrieval per modality, SQLite metadata, open-set matching."""
