# Runs ringws's own main.py with the bench control port beside it.
#   micropython -X heapsize=110k ringws_bench_main.py PORT CTL_PORT
# PORT goes into config.json (the folder is the bench's own build of firmware/).
# MicroPython's asyncio has one global task queue: a task created here runs as soon as
# main.py starts its loop with asyncio.run().
import asyncio
import json
import sys

import ctl

with open("config.json") as f:
    cfg = json.load(f)
cfg["server"]["port"] = int(sys.argv[1])
with open("config.json", "w") as f:
    json.dump(cfg, f)
del cfg
asyncio.create_task(ctl.serve_async(int(sys.argv[2])))
exec(open("main.py").read(), {"__name__": "__main__"})
