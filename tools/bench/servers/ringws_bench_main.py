# Runs ringws's own start-up (launch.py, what main.py calls) with the bench control port
# beside it, on the same asyncio loop.
#   micropython -X heapsize=110k ringws_bench_main.py PORT CTL_PORT
# PORT goes into config.json (the folder is the bench's own build of firmware/).
import json
import sys

with open("config.json") as f:
    cfg = json.load(f)
cfg["server"]["port"] = int(sys.argv[1])
with open("config.json", "w") as f:
    json.dump(cfg, f)
del cfg
CTL_PORT = int(sys.argv[2])


def start_ctl(srv, cfg):
    # After the slot arena and the server's code are in place, like any application.
    import asyncio

    import ctl

    asyncio.create_task(ctl.serve_async(CTL_PORT))


import launch  # noqa: E402

launch.main(start_ctl)
