# `make run`: the site with demo data on embedded defaults (SQLite, a serverless broker).
# `make test`: the whole test suite. Both set up .venv from requirements.txt first.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
ADDRPORT ?= 127.0.0.1:8000

.PHONY: install run test bench clean

$(BIN)/.installed: requirements.txt requirements-nodeps.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -r requirements.txt
	$(BIN)/python -m pip install --quiet --no-deps -r requirements-nodeps.txt
	touch $@

install: $(BIN)/.installed

# The demo runs the whole loop on SmolLM2-135M on the CPU, with small step counts: rank two dozen
# outputs and a reward model, then a policy, are trained, judged and (if better) activated in minutes.
SMOLLM2 := artifacts/models/SmolLM2-135M-Instruct
run: export DEBUG ?= 1
run: export TRAIN_RM_AFTER_COMPARISONS ?= 24
run: export TRAIN_SFT_AFTER_DEMONSTRATIONS ?= 10
run: export SAMPLE_PROMPTS_PER_TASK ?= 6
run: export SAMPLE_MAX_NEW_TOKENS ?= 48
run: export CHAT_MAX_NEW_TOKENS ?= 96
run: export EVALUATE_NEW_POLICIES ?= 6
run: export RANKING_BUFFER ?= 24
run: export DEMONSTRATIONS_WAIT_FOR_SUGGESTION ?= 1
run: export TRAINING_OPTIONS ?= {"reward": {"batch_size": 4, "max_length": 256}, "sft": {"epochs": 1, "batch_size": 2, "max_length": 256}, "ppo": {"steps": 4, "rollout_batch_size": 4, "minibatch_size": 2, "max_new_tokens": 32}}
run: install $(SMOLLM2)
	$(BIN)/python manage.py migrate --noinput
	$(BIN)/python manage.py seed_demo
	$(BIN)/python manage.py rundev $(ADDRPORT)

$(SMOLLM2): | $(BIN)/.installed
	$(BIN)/python -m rlhf prepare-model --output $@

test: install
	$(BIN)/python -m pytest

bench: install
	$(BIN)/python bench/import_prompts.py

clean:
	rm -rf $(VENV) var
