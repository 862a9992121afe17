"""mmattn models. Importing this package registers every model in the ``mmattn`` scope."""
from .backbones import *  # noqa: F401,F403
