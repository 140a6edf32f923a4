"""Alembic migrations of the state database, shipped inside the package (``rag.state.db`` runs them)."""
