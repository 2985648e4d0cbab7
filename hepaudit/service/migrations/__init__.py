"""Alembic migrations of the service's schema (run by :func:`hepaudit.service.db.migrate`)."""
