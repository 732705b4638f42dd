"""The read side of the core: rules that decide what a caller may be shown. Resolvers,
reports and subscriptions read through these; use cases keep the write rules in
service/access.py."""
