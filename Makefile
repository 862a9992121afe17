# mmattn's two commands (see README):  make demo   — the main job;  make test — the test suite.
# Both create .venv and install the pinned stack first (tools/setup_env.sh; idempotent).
PY := .venv/bin/python
DEMO_CONFIG ?= configs/sample/fcos_poolformer-s12-half_fpn_sample-coco.py
DEMO_WORK_DIR ?= work_dirs/demo
PYTEST_ARGS ?=
# one pytest-xdist worker per core; a test file runs in one worker (its module fixtures are built once)
TEST_JOBS ?= $(shell nproc)
XDIST := -n $(TEST_JOBS) --dist loadfile

.PHONY: setup demo test test-fast data clean

setup:
	@bash tools/setup_env.sh

demo: setup
	$(PY) tools/run_demo.py --config $(DEMO_CONFIG) --work-dir $(DEMO_WORK_DIR)

test: setup
	$(PY) -m pytest $(XDIST) $(PYTEST_ARGS)

test-fast: setup
	$(PY) -m pytest $(XDIST) -m "not slow and not heavy" $(PYTEST_ARGS)

data: setup
	$(PY) tools/data/make_sample_data.py --out data

clean:
	rm -rf work_dirs outputs .pytest_cache
