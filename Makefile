# Everything runs from the repo's .venv, which scripts/bootstrap.sh creates.
VENV     := .venv
PY       := $(VENV)/bin/python
TEST_CMD := $(PY) -m pytest tests -q

.PHONY: bootstrap test lint fmt demo bench screenshots clean-lab install

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
	$(VENV)/bin/mypy engine console bench tests

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

# Put infw and infw-tui on PATH and install the boot-time restore and agent units (not enabled).
install: bootstrap
	ln -sfn $(CURDIR)/$(VENV)/bin/infw /usr/local/bin/infw
	ln -sfn $(CURDIR)/$(VENV)/bin/infw-tui /usr/local/bin/infw-tui
	install -m 0644 deploy/infw-restore.service /etc/systemd/system/infw-restore.service
	install -m 0644 deploy/infw-agent.service /etc/systemd/system/infw-agent.service
	install -d -m 0755 /etc/infw
	[ -e /etc/infw/config.yaml ] || install -m 0644 deploy/config.yaml /etc/infw/config.yaml
	@echo "installed; enable the boot restore and the agent with:"
	@echo "  systemctl daemon-reload && systemctl enable --now infw-restore infw-agent"
