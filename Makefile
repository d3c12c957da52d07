QUESTION ?= Natalia sold clips to 48 of her friends in April, and then she sold half as many clips in May. How many clips did Natalia sell altogether in April and May?

.PHONY: bootstrap demo test unit lint docs

bootstrap:
	./scripts/bootstrap.sh

demo: bootstrap
	.venv/bin/ttc solve "$(QUESTION)" --n 4

test: bootstrap lint
	$(MAKE) docs
	.venv/bin/python -m pytest -q

# ruff (lint and format) over everything, mypy over the package
lint:
	.venv/bin/ruff check ttc_graph tests examples benchmarks
	.venv/bin/ruff format --check ttc_graph tests examples benchmarks
	.venv/bin/mypy ttc_graph

unit:
	.venv/bin/python -m pytest -q -m "not integration"

# the documentation site (mkdocs-material + mkdocstrings), built into site/ (ignored); warnings fail the build
docs:
	NO_MKDOCS_2_WARNING=1 .venv/bin/mkdocs build --strict --site-dir site
