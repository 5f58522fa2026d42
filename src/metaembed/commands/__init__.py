"""Sub-commands of the ``metaembed`` CLI; each module exposes ``register(subparsers)``."""
