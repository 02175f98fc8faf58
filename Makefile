# The two commands a newcomer needs:
#   make demo   set everything up, train a small model for about 90 s on a built-in corpus, sample
#   make test   set everything up, run the test suite
VENV ?= .venv
CHARGEN = $(VENV)/bin/chargen
DEMO_CORPUS = corpora/stdlib.txt
DEMO_TIME ?= 90s

.PHONY: setup demo test bench clean

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml scripts/setup.sh
	bash scripts/setup.sh $(VENV)
	touch $@

$(DEMO_CORPUS): | setup
	$(CHARGEN) corpus stdlib --out $@ --max-mb 2

demo: setup $(DEMO_CORPUS)
	rm -rf checkpoints/demo
	$(CHARGEN) train $(DEMO_CORPUS) --max-time $(DEMO_TIME) --out checkpoints/demo
	$(CHARGEN) sample checkpoints/demo --prime "def " --length 600 --temp 0.7 --seed 1

test: setup
	$(VENV)/bin/python -m pytest

clean:
	rm -rf $(VENV) checkpoints/demo checkpoints/.cache
