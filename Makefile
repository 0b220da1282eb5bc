# ipsec-lab: `make lab-up` installs what is missing and shows a verified tunnel; `make test` runs
# the test suite. Both need root (network namespaces, strongSwan daemons).
SPEC    ?= configs/examples/default.yaml
NAME    ?= default
BACKEND ?= auto
LAB     := .venv/bin/ipsec-lab

.PHONY: setup lab-up lab-down lab-status check test lint bench matrix

setup:
	@scripts/setup --docker

lab-up: setup
	@if [ "$(BACKEND)" != netns ]; then $(LAB) engine start; fi
	@$(LAB) status --name $(NAME) >/dev/null 2>&1 && echo "lab $(NAME) is already up" || \
		$(LAB) up $(SPEC) --name $(NAME) --backend $(BACKEND)
	$(LAB) check --name $(NAME)

check:
	$(LAB) check --name $(NAME)

lab-status:
	$(LAB) status --name $(NAME)

lab-down:
	$(LAB) down --name $(NAME)

test: setup
	$(LAB) engine start
	$(LAB) image build
	.venv/bin/pytest -ra

lint: setup
	.venv/bin/ruff check lab tests bench

bench: setup
	.venv/bin/python -m bench.up_to_verified

# The interop matrix: pairwise over the whole menu plus every negative reason, with reports.
matrix: setup
	rm -f build/matrix/results.jsonl
	$(LAB) matrix --matrix configs/matrix/pairwise.yaml --backend netns --results build/matrix/results.jsonl \
		--json build/matrix/matrix.json --junit build/matrix/matrix.xml --html build/matrix/matrix.html
