# ipsec-lab: `make lab-up` installs what is missing and shows a verified tunnel; `make test` runs
# the test suite. Both need root (network namespaces, strongSwan daemons).
SPEC    ?= configs/examples/default.yaml
NAME    ?= default
BACKEND ?= auto
LAB     := .venv/bin/ipsec-lab

.PHONY: setup setup-vm lab-up lab-down lab-status check test test-kernel lint bench bench-kernel matrix

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

setup-vm:
	@scripts/setup --vm
	@$(LAB) vm kernel >/dev/null

# The tests marked `kernel` on the kernel's XFRM dataplane: in a QEMU guest with the
# distribution's stock kernel where this host's kernel has no ESP, directly where it has.
KERNEL_TESTS = env IPSEC_LAB_EXPECT_DATAPLANE=kernel .venv/bin/pytest -ra -m kernel -p no:cacheprovider -n 2 --durations=15
test-kernel: setup
	@if $(LAB) vm needed; then $(MAKE) --no-print-directory setup-vm && \
		$(LAB) vm run --quiet --timeout 3000 -- $(KERNEL_TESTS); else $(KERNEL_TESTS); fi

lint: setup
	.venv/bin/ruff check lab tests bench
	.venv/bin/mypy

bench: setup
	.venv/bin/python -m bench.up_to_verified

# kernel XFRM vs libipsec, measured in one run inside the guest (a ratio: TCG slows both alike)
bench-kernel: setup-vm
	$(LAB) vm run --timeout 3000 -- .venv/bin/python -m bench.bench_dataplanes

# The interop matrix: pairwise over the whole menu plus every negative reason, with reports.
matrix: setup
	rm -f build/matrix/results.jsonl
	$(LAB) matrix --matrix configs/matrix/pairwise.yaml --backend netns --results build/matrix/results.jsonl \
		--json build/matrix/matrix.json --junit build/matrix/matrix.xml --html build/matrix/matrix.html
