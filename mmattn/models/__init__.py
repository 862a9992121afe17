"""mmattn models. Importing this package registers every model in the ``mmattn`` scope."""
from .backbones import *  # noqa: F401,F403
from .necks import *  # noqa: F401,F403
from .heads import *  # noqa: F401,F403
from .detectors import *  # noqa: F401,F403
