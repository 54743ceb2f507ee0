"""One ComponentResource per concern: network, access, identity, storage, templates, guard."""
