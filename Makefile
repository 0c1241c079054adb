# The two commands a person needs: `make run` and `make test`. Both install what is missing first.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
GEN    := gen
PROTOS := $(shell find proto -name '*.proto')

.PHONY: install proto run test test-long test-faults test-compose bench bench-deps bench-e2e lint clean system-deps coverage

install: $(VENV)/.installed $(GEN)/.built

# The virtualenv, the pinned packages, and a .pth file that puts the project and its generated code
# on the path (what an editable install would do, without a build backend).
$(VENV)/.installed: requirements.txt requirements-runtime.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --disable-pip-version-check -r requirements.txt
	printf '%s\n%s\n' "$(CURDIR)" "$(CURDIR)/$(GEN)" > "$$($(BIN)/python -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')/pushsystem.pth"
	touch $@

# Generated protobuf/gRPC code (with .pyi stubs), rebuilt from clean; never edited by hand.
proto: $(GEN)/.built
$(GEN)/.built: $(VENV)/.installed $(PROTOS)
	rm -rf $(GEN) && mkdir -p $(GEN)
	$(BIN)/python -m grpc_tools.protoc -Iproto --python_out=$(GEN) --pyi_out=$(GEN) --grpc_python_out=$(GEN) $(PROTOS)
	touch $@

# Debian's Chromium for the page tests (Playwright drives it through executable_path) and
# redis-server for the Redis engine's tests (they start their own, on a free port), and redis-cli, which
# makes their Redis Cluster (`redis-cli --cluster create`, tests/support/redis_cluster.py).
system-deps:
	@missing=""; command -v chromium >/dev/null 2>&1 || missing="$$missing chromium"; \
	command -v redis-server >/dev/null 2>&1 || missing="$$missing redis-server"; \
	command -v redis-cli >/dev/null 2>&1 || missing="$$missing redis-tools"; \
	if [ -n "$$missing" ]; then apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null; fi

run: install
	@echo "Starting push_service (:$${PUSH_PORT:-50051}), task_service (:$${TASK_PORT:-50052}) and ws_edge."
	@echo "Point a browser at http://$${EDGE_HOST:-127.0.0.1}:$${EDGE_PORT:-8000}/  (Ctrl-C stops everything)"
	@echo "Admin page: /admin, token $$(sed -n 's/.*EDGE_ADMIN_TOKEN=\([^ ]*\).*/\1/p' Procfile) (the Procfile's, demo only)"
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/honcho start

# Three workers (pytest-xdist), each test module whole on one of them (its shared system started once):
# most tests wait on processes, sockets and faults that last seconds, not on the CPU (a run with the CPU
# hog beside it: 2 workers 7:09, 3 workers 4:28 of tests).
TEST_WORKERS ?= 3
test: install system-deps lint
	$(BIN)/python -m pytest -n $(TEST_WORKERS) --dist loadfile -m "not long" $(PYTEST_ARGS)

# The issues' literal cases that last minutes (a 30 s token kept alive 3 minutes by refresh, in Python and
# in Chromium), side by side on two workers; `.ci/run` runs them after `make test`.
test-long: install system-deps
	$(BIN)/python -m pytest -n 2 -m long -o timeout=600 $(PYTEST_ARGS)

# The fault suite (tests/faults): every scenario FAULT_REPEAT times with FAULT_PAUSE-second faults,
# each table printed and written to test-artifacts/faults.txt (`make test` runs each once, short).
FAULT_REPEAT ?= 3
FAULT_PAUSE ?= 10
test-faults: install system-deps
	FAULT_REPEAT=$(FAULT_REPEAT) FAULT_PAUSE=$(FAULT_PAUSE) $(BIN)/python -m pytest -s -o timeout=600 tests/faults $(PYTEST_ARGS)

# The benchmark's own packages (picows for the load generator and the `limit` baseline), pinned apart
# from the services'; Node's `ws` for its baseline, into a git-ignored folder, when node is here.
$(VENV)/.bench-installed: $(VENV)/.installed bench/requirements.txt
	$(BIN)/pip install -q --disable-pip-version-check -r bench/requirements.txt
	touch $@

bench/.node/node_modules/ws/package.json:
	if command -v npm >/dev/null 2>&1; then npm install --silent --no-audit --no-fund --prefix bench/.node ws@8.18.3; fi

bench-deps: install $(VENV)/.bench-installed
	@command -v node >/dev/null 2>&1 && $(MAKE) --no-print-directory bench/.node/node_modules/ws/package.json || true

# The guide's two tests against this system (figures in the README).
bench: bench-deps
	$(BIN)/python -m bench.guide_tests

# The end-to-end benchmark: beside the physical limit and Node's ws (issue 18), then beside the FastAPI
# baseline peers; writes docs/PERFORMANCE.md's results.
bench-e2e: bench-deps
	$(BIN)/python -m bench.e2e --suite limit --write
	$(BIN)/python -m bench.e2e --write

# The rules are in pyproject.toml ([tool.ruff.lint]); `make test` runs this first.
lint: install
	$(BIN)/python -m ruff check .

clean:
	rm -rf $(GEN) $(VENV)

# Unit-test coverage of the edge (its core must stay covered: the session, routing, sequencing).
coverage: install
	$(BIN)/python -m coverage run --source=ws_edge -m pytest -q -p no:cacheprovider tests/ws_edge
	$(BIN)/python -m coverage report
	$(BIN)/python -m coverage report --include='ws_edge/core/*' --fail-under=90 >/dev/null

# The system as real containers (tests/containers, README → Operations): Docker's engine and Compose
# from Debian's packages when missing (dockerd started and stopped again when none answers), base images
# from Debian where the registry is unreachable and the project's images, both cached by content; `up`
# under its own project name on free ports, the portable suite and a fault pass (docker kill / pause /
# restart) against it, `down -v` whatever happened. Fails with the reason where Docker cannot work.
test-compose: install
	$(BIN)/python -m tests.containers
