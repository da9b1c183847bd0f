"""The store: SQLModel tables (``db.models``), migrations, the store handle (``db.store.open_store``)
and small audited CRUD functions taking a Session, one module per concept. Persistence only: nothing
here imports torch, runs a model, starts a thread or a process."""
