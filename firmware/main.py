# Entry point on the board and under the MicroPython unix port (make sim).
# Kept to two lines: MicroPython compiles main.py from source in RAM at every boot, so the
# start-up code lives in launch.py, which loads as bytecode.
import launch

launch.main()
