# Everything runs from the repo's .venv, which scripts/bootstrap.sh creates.
VENV     := .venv
PY       := $(VENV)/bin/python
TEST_CMD := $(PY) -m pytest tests -q

.PHONY: bootstrap test lint fmt demo bench screenshots clean-lab

bootstrap:
	./scripts/bootstrap.sh

# pytest exits 5 when it collected nothing: that is a failure, and says so.
test: bootstrap
	@echo '$(TEST_CMD)'; $(TEST_CMD); rc=$$?; \
	if [ $$rc -eq 5 ]; then echo '[test] FAIL: no tests ran (pytest collected nothing, exit 5)' >&2; fi; \
	exit $$rc

lint: bootstrap
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy engine console

fmt: bootstrap
	$(VENV)/bin/ruff check --fix .
	$(VENV)/bin/ruff format .

demo: bootstrap
	$(VENV)/bin/infw-tui --lab

bench: bootstrap
	$(PY) -m bench.run

screenshots: bootstrap
	$(PY) -m console.tui.screenshots

clean-lab:
	$(VENV)/bin/infw lab down
