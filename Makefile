# ringws: `make test` and `make sim` are the two commands a newcomer needs.
# Everything installs into .venv from requirements.txt; only python3 is assumed.

PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
PORT   ?= 8080
HEAP   ?= 110k
BOARD  ?= esp32
# certificates (make cert) that make deploy puts on a board: CERTS= deploys without TLS
CERTS ?= certs
# wss/https port of make sim (served once `make cert BOARD=host HOST=127.0.0.1` has run)
TLS_PORT ?= $(shell echo $$(($(PORT) + 1)))
# With TLS on, the firmware needs about 20 KB more heap (the TLS module, the SSL context, 3
# TLS slots): make sim then runs at 192k unless HEAP is given.
SIM_HEAP = $(if $(and $(wildcard certs/host.pem),$(filter file,$(origin HEAP))),192k,$(HEAP))
# The host board with the ninth slot lwIP's 10 sockets allow beside the listener: 8
# WebSockets and the one kept for HTTP (/stats answers with all 8 open at 110k).
SIM_SLOTS = --set max_connections=9

.PHONY: help venv build cert dist sim test test-fast bench bench-quick flash deploy sim-board fuzz soak shape autobahn clean

help:
	@echo "make sim [PORT=8080] [HEAP=110k] [APP=module|file.py]   run the firmware under the MicroPython unix port"
	@echo "make sim DEFLATE=0                 without permessage-deflate (on by default: one inflater)"
	@echo "make cert BOARD=.. HOST=..         EC key + self-signed certificate: certs/BOARD.pem (wss/https)"
	@echo "make test                          set up .venv from scratch and run every test"
	@echo "make bench | bench-quick           speed and memory against peers"
	@echo "make flash BOARD=.. PORT=.. FIRMWARE=..   write MicroPython to a board"
	@echo "make deploy BOARD=.. PORT=.. [APP=..]   compile and upload firmware/ to a board"
	@echo "make deploy BOARD=.. URL=ws://b/   the same over WiFi (URL=\"ws://a/ ws://b/\": several)"
	@echo "make dist                          mip packages of .mpy per arch in dist/<arch>/"
	@echo "make shape                         function/module length, nesting, import circles"
	@echo "make autobahn [CASES=12.*,13.*]    the Autobahn testsuite against /echo, compression on, 110k (Python 2.7)"

$(STAMP): requirements.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements.txt
	touch $(STAMP)

venv: $(STAMP)

# APP=name: a module in firmware/; APP=path/to/mine.py: that file goes into the build.
build: $(STAMP)
	$(PY) tools/build.py --board host --out build/sim --port $(PORT) --tls-port $(TLS_PORT) $(SIM_SLOTS) $(if $(APP),--set app=$(APP)) $(if $(filter 0,$(DEFLATE)),--set inflaters=0)

# HOST: the board's names and addresses, space- or comma-separated (subjectAltName).
cert: $(STAMP)
	$(PY) tools/cert.py --board $(BOARD) --host "$(or $(HOST),ringws.local)"

# mip packages of bytecode, one per arch: dist/<arch>/package.json (tools/dist.py).
dist: $(STAMP)
	$(PY) tools/dist.py

# Ctrl-C and SIGTERM both stop it gracefully (tools/sim_signals.py).
sim: build
	cd build/sim && exec ../../$(PY) ../../tools/sim_signals.py ../../$(VENV)/bin/micropython -X heapsize=$(SIM_HEAP) -m main

test: $(STAMP)
	$(PY) tools/setup_test_deps.py
	$(PY) -m pytest host_tests -q -rfEs

test-fast: $(STAMP)
	$(PY) -m pytest host_tests -q -x -m "not slow"

bench: $(STAMP)
	$(PY) tools/bench/run.py

bench-quick: $(STAMP)
	$(PY) tools/bench/run.py --quick

# PORT defaults to the simulator's TCP port; flash and deploy need one given explicitly.
GIVEN_PORT = $(if $(filter command line environment,$(origin PORT)),$(PORT))

flash: $(STAMP)
	$(PY) tools/flash.py --board $(BOARD) --port "$(GIVEN_PORT)" --firmware "$(FIRMWARE)"

# URL="ws://a/ ws://b/": over WiFi to every board listed (tools/netdeploy.py)
deploy: $(STAMP)
	$(PY) tools/deploy.py --board $(BOARD) --port "$(GIVEN_PORT)" --url "$(URL)" --certs "$(CERTS)" $(if $(APP),--set app=$(APP)) $(DEPLOY_ARGS)

sim-board: $(STAMP)
	$(PY) tools/virtual_board.py $(VB_ARGS)

fuzz: $(STAMP)
	$(PY) tools/fuzz.py $(FUZZ_ARGS)

soak: $(STAMP)
	$(PY) tools/soak.py $(SOAK_ARGS)

# The Autobahn testsuite (Python 2.7, in .venv-autobahn) against /echo of make sim
# (host board, 9 slots, one inflater), 110k; CASES="1.*,12.1.1" picks
# cases (default 12.*,13.*: about 1.5 hours). Not in make test.
autobahn: $(STAMP)
	$(PY) tools/autobahn.py $(if $(CASES),--cases "$(CASES)") $(AUTOBAHN_ARGS)

# Function and module length, nesting and import circles in firmware/ (tools/shape_check.py).
shape:
	$(PYTHON) tools/shape_check.py

clean:
	rm -rf build dist .pytest_cache bench-results test-output
