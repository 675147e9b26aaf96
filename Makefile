# Entry points the README names. `make setup run` trains the main job; `make setup test` tests.
PYTHON ?= python3
WORKDIR ?= runs/main
MAIN_CONFIG ?= configs/oicr.py:scenes

.PHONY: setup data run test test-fast lint bench

setup: data
	$(PYTHON) -m pip install -q -e '.[dev]'

# Fashion-MNIST from Debian's dataset-fashion-mnist, the embedded default data.
data:
	@if [ -d /usr/share/datasets/fashion-mnist ]; then echo "Fashion-MNIST: present"; \
	elif command -v apt-get >/dev/null; then \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq dataset-fashion-mnist; \
	else echo "no apt-get: put Fashion-MNIST IDX files in a folder and pass --config.data.mnist.folder=DIR"; fi

run:
	$(PYTHON) train.py --config $(MAIN_CONFIG) --workdir $(WORKDIR)

test:
	$(PYTHON) -m pytest tests -q -n 2

# The inner loop: everything but the tests marked slow, over both cores.
test-fast:
	$(PYTHON) -m pytest tests -q -m "not slow" -n 2

lint:
	ruff format --check . && ruff check .

bench:
	$(PYTHON) -m pytest benchmarks -q -s
