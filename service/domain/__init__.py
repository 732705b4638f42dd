"""The pure domain: rules, enums, errors and the principal. No I/O, no SQL, no framework;
every other layer may import it and it imports nothing of theirs (see docs/design.md)."""
