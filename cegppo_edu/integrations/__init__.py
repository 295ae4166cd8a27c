"""Adapters that plug the package's losses into other training engines.

Nothing here is imported by ``import cegppo_edu``: each adapter needs its engine installed (verl lives in its
own environment, see ``book/scaling_verl.md``).
"""
