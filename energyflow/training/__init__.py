"""The application layer over ``ops``, ``nn`` and ``models``: the training loop (``fit``), its
settings (``TrainConfig``), data sets (``data``), pictures (``plots``) and the command line
(``cli``). The library core never imports from here.

    from energyflow.training import TrainConfig, fit
"""

from energyflow.training.config import TrainConfig
from energyflow.training.fit import fit

__all__ = ["TrainConfig", "fit"]
