"""The GraphQL object types, one module per node (see schema/nodes.py for the list).
Types refer to one another lazily (strawberry.lazy), so the modules import no circle."""
