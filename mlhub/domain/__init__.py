"""Pure-Python domain: enums, specs, state machines, ordering. Imports neither Ray, SQLAlchemy, pymongo nor redis."""
