# convkit: `make demo` trains the lecture's MNIST MLP; `make test` runs the tests.
# Both set everything up first (a .venv with convkit installed editable, torch pinned).

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

# Use the shared copy of the datasets when it sits beside the checkout.
ifneq ($(wildcard ../shared/data),)
export CONVKIT_DATA ?= $(abspath ../shared/data)
endif

.PHONY: install browser demo test fuzz bench bench-long lint clean

install: $(STAMP)

$(STAMP): pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet -c constraints.txt -e '.[dev,export,serve]'
	touch $@

demo: $(STAMP)
	$(BIN)/convkit train mnist-mlp

# The browser tests (tests/test_serve_browser.py) drive Debian's Chromium through Playwright,
# which cannot download its own browsers here. Installing it needs root, as CI has; without
# Chromium those tests skip, except under CI=true, where they fail. `make demo` needs none of it.
browser:
	command -v chromium >/dev/null \
		|| (apt-get update && apt-get install -y --no-install-recommends chromium) \
		|| { [ "$$CI" != true ] && echo "Chromium not installed (needs root): the browser tests skip"; }

test: $(STAMP) browser
	$(BIN)/python -m pytest

# A long property-test campaign: every parser of outside input on 20,000 generated files each
# (`make test` runs the same tests on a few hundred).
fuzz: $(STAMP)
	CONVKIT_FUZZ_EXAMPLES=20000 $(BIN)/python -m pytest tests/test_fuzz.py

# convkit against a plain-PyTorch loop, in one run; the tables also land in benchmarks/out/.
# Then time to accuracy: the fast recipes from the command's start, beside plain PyTorch.
bench: $(STAMP)
	$(BIN)/python benchmarks/bench.py --json benchmarks/out/latest.json \
		--markdown benchmarks/out/latest.md
	$(BIN)/python benchmarks/time_to_accuracy.py \
		--json benchmarks/out/time_to_accuracy.json --markdown benchmarks/out/time_to_accuracy.md

# Every time-to-accuracy mark (about 12 hours on 2 cores): the short ones, then cifar10-fast
# beside airbench94 (given as AIRBENCH94=SCRIPT, a CPU port kept outside this repository), and
# resnet20-fast and resnet56-fast beside the paper's schedule. One table, in
# benchmarks/out/time_to_accuracy_all.md.
bench-long: $(STAMP)
	$(BIN)/python benchmarks/time_to_accuracy.py --marks all $(if $(AIRBENCH94),--airbench94 $(AIRBENCH94)) \
		--json benchmarks/out/time_to_accuracy_all.json \
		--markdown benchmarks/out/time_to_accuracy_all.md

lint: $(STAMP)
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/ruff format --check src tests benchmarks

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache build src/*.egg-info
