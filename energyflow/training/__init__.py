"""The application layer over ``ops``, ``nn`` and ``models``: the training loop (``fit``), data
sets (``data``), sample metrics (``metrics``), pictures (``plots``) and the command line
(``cli``). The library core never imports from here."""
