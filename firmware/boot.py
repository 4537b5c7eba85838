# boot.py: kept minimal on purpose. It never touches the network; main.py does that and
# reports every failure instead of leaving a board that silently does nothing.
